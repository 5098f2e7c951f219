/**
 * The container's runtime stage, performed outside a container (no image can be built here):
 * `npm pack` the built package, unpack it beside the lockfile, `npm ci --omit=dev` in that
 * clean directory, then start `node dist/src/main.js` with configuration from the environment
 * only, as an unprivileged user, probe `/readyz`, and stop it with SIGTERM (exit 0).
 *
 * The install runs offline from npm's cache (tests reach nothing beyond loopback), without the
 * optional codex engine package (hundreds of megabytes; the server runs with `engine: off`), and
 * hands better-sqlite3's install script a local prebuild made from this checkout's compiled
 * module, so its real `prebuild-install` step runs without a download or a compile. The test
 * skips, saying why, only when packing or installing is impossible on this machine.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { leakedCanaries } from './helpers/canary.js'
import { httpGet } from './helpers/client.js'
import { NATIVE_MODULE_MISSING } from '../src/remote-control/native-module.js'
import { runProcess, spawnProcess, type Spawned } from './helpers/process.js'
import { tempDir } from './helpers/temp-dir.js'
import { withTimeout } from './helpers/wait.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string }
// npm and its children start slowly on a loaded machine; these are guards against a hang.
const INSTALL_DEADLINE_MS = 170_000
const START_DEADLINE_MS = 60_000

/** npm's environment: the user's, without this test run's own npm lifecycle settings or app-server settings. */
function npmEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(npm_|APP_SERVER_)/i.test(k)) env[k] = v
  return { ...env, ...extra }
}

/** The unprivileged account to run as when the test runs as root (`nobody`), else none (already unprivileged). */
function unprivilegedIds(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nobody:'))
  const [, , uid, gid] = line?.split(':') ?? []
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : null
}

/**
 * better-sqlite3's prebuilt-binary archive, named as `prebuild-install` looks it up in a local
 * prebuilds directory; null when this checkout has no compiled module to pack.
 */
async function localPrebuild(dir: string): Promise<string | null> {
  const pkgDir = join(ROOT, 'node_modules', 'better-sqlite3')
  const binary = join(pkgDir, 'build', 'Release', 'better_sqlite3.node')
  if (!existsSync(binary)) return null
  const version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version
  const stage = join(dir, 'stage')
  mkdirSync(join(stage, 'build', 'Release'), { recursive: true })
  copyFileSync(binary, join(stage, 'build', 'Release', 'better_sqlite3.node'))
  const prebuilds = join(dir, 'prebuilds')
  mkdirSync(prebuilds)
  const archive = join(prebuilds, `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`)
  const tar = await runProcess('tar', ['-czf', archive, '-C', stage, 'build'])
  return tar.code === 0 ? prebuilds : null
}

interface Installed {
  readonly work: string
  readonly app: string
  /** What `npm ci` printed (its `prepare` line among it). */
  readonly installOutput: string
}

/**
 * The runtime stage's install: the package packed, unpacked beside the lockfile, production
 * dependencies installed. A string says why that is impossible here (the test then skips).
 */
async function packAndInstall(): Promise<Installed | string> {
  const work = tempDir('deploy', t)
  chmodSync(work, 0o755)
  // Packs what the build produced (dist/ is built before any test runs); no scripts, so the
  // pack does not rebuild dist/ under the other test files.
  const pack = await runProcess('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, env: npmEnv({}), timeoutMs: INSTALL_DEADLINE_MS }).catch(
    (err: Error) => ({ code: null, stdout: '', stderr: err.message }),
  )
  if (pack.code !== 0) return `npm pack is not possible here: ${lastLine(pack.stderr)}`
  const tarball = join(work, (JSON.parse(pack.stdout) as { filename: string }[])[0]!.filename)

  const app = join(work, 'app')
  mkdirSync(app)
  const untar = await runProcess('tar', ['-xzf', tarball, '-C', app, '--strip-components=1'])
  if (untar.code !== 0) return `tar cannot unpack the package here: ${lastLine(untar.stderr)}`
  copyFileSync(join(ROOT, 'package-lock.json'), join(app, 'package-lock.json'))

  const prebuilds = await localPrebuild(work)
  const install = await runProcess('npm', ['ci', '--omit=dev', '--omit=optional', '--offline', '--no-audit', '--no-fund'], {
    cwd: app,
    env: npmEnv(prebuilds === null ? {} : { npm_config_better_sqlite3_local_prebuilds: prebuilds }),
    timeoutMs: INSTALL_DEADLINE_MS,
  })
  if (install.code !== 0 && /ENOTCACHED|ENOTFOUND|EAI_AGAIN/.test(install.stderr)) {
    return `npm's cache lacks a production dependency, so an offline install is not possible here: ${lastLine(install.stderr)}`
  }
  if (install.code !== 0) throw new Error(`npm ci --omit=dev failed (exit ${install.code}): ${install.stderr}`)
  return { work, app, installOutput: install.stdout + install.stderr }
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? ''
}

const installed = await packAndInstall()

t.test('runtime stage: packed package, production install, unprivileged start, /readyz, SIGTERM exits 0', { skip: typeof installed === 'string' ? installed : false }, async (t) => {
  const { work, app, installOutput } = installed as Installed
  t.ok(existsSync(join(app, 'dist', 'src', 'main.js')), 'the package ships dist/')
  t.notOk(existsSync(join(app, 'dist', 'test')), 'the package does not ship the tests')
  t.notOk(existsSync(join(app, 'src')), 'the package does not ship the TypeScript sources')
  t.match(installOutput, /dev dependencies are not installed/, '`prepare` builds nothing without the dev dependencies')
  t.notOk(existsSync(join(app, 'node_modules', 'typescript')), 'no dev dependency installed')
  t.ok(existsSync(join(app, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')), "better-sqlite3's install script ran")

  const home = join(work, 'home')
  mkdirSync(home, { mode: 0o700 })
  const ids = unprivilegedIds()
  if (ids) chownSync(home, ids.uid, ids.gid)
  const env = { PATH: process.env.PATH ?? '', HOME: home, APP_SERVER_HOME: home, APP_SERVER_LISTEN: 'ws://127.0.0.1:0', APP_SERVER_ENGINE: 'off' }
  const start = async (): Promise<{ server: Spawned; url: string }> => {
    // tap puts its process-info hook into every child's NODE_OPTIONS; the hook writes its report
    // under this checkout on exit, which an unprivileged user cannot. `env -u` drops it and execs
    // node, so the signal still goes straight to node.
    const server = spawnProcess('env', ['-u', 'NODE_OPTIONS', process.execPath, join(app, 'dist', 'src', 'main.js')], { cwd: app, env, timeoutMs: null, ...(ids ?? {}) })
    t.teardown(() => server.kill())
    const url = (await withTimeout(server.waitFor('stderr', /readyz: (\S+)/), START_DEADLINE_MS, 'the installed server to print its banner'))[1]!
    return { server, url }
  }
  const { server, url } = await start()

  if (ids) {
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'))?.[1]
    t.equal(Number(uid), ids.uid, 'the server runs as the unprivileged user')
  } else {
    t.not(process.getuid?.(), 0, 'the server runs unprivileged (the test itself is)')
  }
  const ready = await httpGet(url)
  t.equal(ready.status, 200, '/readyz answers 200')
  t.same(JSON.parse(ready.body), { status: 'ready' })
  t.match(server.stderr(), new RegExp(`app-server ${PACKAGE.version.replaceAll('.', '\\.')}`), 'the banner names the version')
  t.notMatch(server.stdout() + server.stderr(), /remote control unavailable/, 'the native module loads (remote control is available)')
  t.equal(statSync(home).uid, ids?.uid ?? process.getuid?.(), 'state stays in the home it was given')

  server.child.kill('SIGTERM')
  const exit = await withTimeout(server.exited, START_DEADLINE_MS, 'exit after SIGTERM')
  t.same(exit, { code: 0, signal: null }, 'SIGTERM → exit 0', { diagnostic: true, stderr: server.stderr(), stdout: server.stdout() })
  t.same(leakedCanaries(server.stdout()), [])

  // An install whose better-sqlite3 script did not run (`--ignore-scripts`): the server still
  // serves, and its log says plainly what is missing and how to fix it.
  const binary = join(app, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')
  renameSync(binary, binary + '.away')
  const bare = await start()
  t.equal((await httpGet(bare.url)).status, 200, 'serves without the native module')
  bare.server.child.kill('SIGTERM')
  t.same(await withTimeout(bare.server.exited, START_DEADLINE_MS, 'exit after SIGTERM'), { code: 0, signal: null })
  const warned = bare.server
    .stdout()
    .split('\n')
    .filter((l) => l.includes('remote control unavailable'))
    .map((l) => (JSON.parse(l) as { level: number; msg: string }))
  t.equal(warned.length, 1, 'one line about it')
  t.match(warned[0], { level: 40, msg: NATIVE_MODULE_MISSING }, 'at WARN, naming the native module and the fix')
})
