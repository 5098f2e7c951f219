/**
 * Removes compiled files whose TypeScript source is gone.
 *
 * `tsc` only ever adds to dist/: a test file deleted or renamed in the sources would leave its
 * compiled `dist/test/*.test.js` behind, and tap (which runs from dist/) would keep running it.
 * Run after every build, so what runs is exactly what the sources say.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { join, relative } from 'node:path'

const ROOT = new URL('..', import.meta.url).pathname
const DIST = join(ROOT, 'dist')
const COMPILED = /\.js(\.map)?$/

/** The source a compiled file came from: dist/test/a.test.js → test/a.test.ts. */
function sourceOf(compiled) {
  return join(ROOT, relative(DIST, compiled).replace(COMPILED, '.ts'))
}

function prune(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) prune(path)
    else if (COMPILED.test(entry.name) && !existsSync(sourceOf(path))) {
      rmSync(path)
      process.stdout.write(`pruned ${relative(ROOT, path)} (its source is gone)\n`)
    }
  }
}

if (existsSync(DIST)) prune(DIST)
