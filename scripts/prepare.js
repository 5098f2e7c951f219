/**
 * npm's `prepare` (run by `npm install` and `npm ci` in a clone): builds dist/ and tap's
 * plugins, but only when the dev dependencies are installed.
 *
 * A production install (`npm ci --omit=dev`, the container's runtime stage) has no TypeScript
 * and no tap, and takes dist/ from a build that already happened (the container's build stage,
 * or the packed tarball, which ships dist/). Failing there with `tsc: not found` would make the
 * usual production step impossible, so that case only says why nothing was built.
 */
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
try {
  require.resolve('typescript/package.json')
  require.resolve('tap/package.json')
} catch {
  process.stdout.write('prepare: dev dependencies are not installed (a production install); dist/ is not rebuilt\n')
  process.exit(0)
}

for (const args of [['run', 'build'], ['exec', '--', 'tap', 'build']]) {
  const result = spawnSync('npm', args, { stdio: 'inherit' })
  if (result.status !== 0) process.exit(result.status ?? 1)
}
