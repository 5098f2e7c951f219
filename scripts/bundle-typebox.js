/**
 * Replaces dist/src/util/typebox.js — tsc's output, which re-exports from the `typebox` package
 * — with one bundled file holding the TypeBox code it re-exports (see src/util/typebox.ts for
 * why). Run by `npm run build` after tsc.
 *
 * tsc rewrites that file only when its source changes, so a build that finds the bundle already
 * in place leaves it alone. The bundle starts with TypeBox's licence (MIT asks that copies carry
 * it) and has no source map: tsc's map describes the re-export, not the bundle, so it is removed.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const ROOT = new URL('..', import.meta.url).pathname
const COMPILED = join(ROOT, 'dist', 'src', 'util', 'typebox.js')
const MARKER = '// Bundled by scripts/bundle-typebox.js'

if (!existsSync(COMPILED)) {
  // tsc's incremental build does not notice a deleted output: it only re-emits changed sources.
  process.stderr.write(`bundle-typebox: ${COMPILED} is missing; delete dist/.tsbuildinfo (or dist/) and build again\n`)
  process.exit(1)
}
const compiled = readFileSync(COMPILED, 'utf8')
if (compiled.startsWith(MARKER)) process.exit(0)

// The package's exports hide its package.json: walk up from its entry point instead.
let typeboxDir = dirname(fileURLToPath(import.meta.resolve('typebox')))
while (!existsSync(join(typeboxDir, 'license'))) {
  if (dirname(typeboxDir) === typeboxDir) throw new Error('bundle-typebox: no licence file above the typebox package entry point')
  typeboxDir = dirname(typeboxDir)
}
const { version } = JSON.parse(readFileSync(join(typeboxDir, 'package.json'), 'utf8'))
const licence = readFileSync(join(typeboxDir, 'license'), 'utf8').trim()

const result = await build({
  stdin: { contents: compiled.replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n'), resolveDir: join(ROOT, 'dist', 'src', 'util'), sourcefile: 'typebox.js', loader: 'js' },
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  write: false,
  legalComments: 'none',
  logLevel: 'warning',
})
const banner = `${MARKER} from typebox@${version} (why: src/util/typebox.ts); its licence:\n${licence.split('\n').map((l) => `// ${l}`.trimEnd()).join('\n')}\n`
writeFileSync(COMPILED, banner + result.outputFiles[0].text)
rmSync(`${COMPILED}.map`, { force: true })
