/**
 * The credential store under real faults: a lock left by a process that really died (and one
 * whose pid is alive, and one whose pid was "recycled"), a writer killed with SIGKILL in the
 * middle of a save, a 64 KiB tmpfs filled to the last page, the same filesystem remounted
 * read-only, a directory where auth.json should be, and garbage in auth.json. What clients see
 * (JSON-RPC errors, CLI lines) carries the reason and never a path; the logs keep the detail.
 * Every secret is a canary.
 *
 * The mounts need root (this suite runs as root); without it those tests skip and say why.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, watch } from 'node:fs'
import { mkdir, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileStore, withFileLock } from '../src/account/stores/index.js'
import { LOCK_FILE, TEMP_MAX_AGE_MS } from '../src/account/stores/file-store.js'
import { StoreError, type AuthDotJson } from '../src/account/types.js'
import { canary, record } from './helpers/canary.js'
import { runCommand } from './helpers/cli.js'
import { connect, type RpcClient } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { spawnProcess } from './helpers/process.js'
import { startServer, type TestServer } from './helpers/server.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test
type Json = Record<string, unknown>

const FILE_STORE_URL = new URL('../src/account/stores/file-store.js', import.meta.url).href
const BOOT_ID = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()

const apiKeyDoc = (key = canary('sk')): AuthDotJson => ({ auth_mode: 'apikey', OPENAI_API_KEY: key })
const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777
/** What the store left beside auth.json (corrupt files kept aside are meant to stay). */
const leftovers = async (dir: string): Promise<string[]> =>
  (await readdir(dir)).filter((n) => n.startsWith('auth.json.') && !n.startsWith('auth.json.corrupt-')).sort()

/** `/proc/<pid>/stat` field 22: when the kernel started that pid. */
async function startTimeOf(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8')
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!
}

/** The StoreError `p` rejects with; fails the test otherwise. Message and detail are recorded. */
async function storeError(t: Test, p: Promise<unknown>): Promise<StoreError> {
  try {
    await p
  } catch (err) {
    t.type(err, StoreError)
    const e = err as StoreError
    record(`${e.message}\n${e.detail}`)
    return e
  }
  t.fail('expected a StoreError')
  return new StoreError('did not throw')
}

/** A tmpfs of `sizeKb` mounted on a fresh directory; null when mounting is not permitted. */
function mountTmpfs(sizeKb: number): { dir: string; unmount(): void } | null {
  const dir = mkdtempSync(join(tmpdir(), 'app-server-faults-mnt-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKb}k,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch {
    rmSync(dir, { recursive: true, force: true })
    return null
  }
  let mounted = true
  return {
    dir,
    unmount() {
      if (mounted) execFileSync('umount', [dir], { stdio: 'pipe' })
      mounted = false
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Makes `dir` read-only by bind-mounting it over itself, read-only. Remounting the whole
 * filesystem would fail while the server holds a file open for writing there (its SQLite
 * database); files it already has open keep working, as they would on a disk gone read-only.
 */
function bindReadOnly(dir: string): () => void {
  execFileSync('mount', ['--bind', dir, dir], { stdio: 'pipe' })
  execFileSync('mount', ['-o', 'remount,bind,ro', dir], { stdio: 'pipe' })
  let bound = true
  return () => {
    if (bound) execFileSync('umount', [dir], { stdio: 'pipe' })
    bound = false
  }
}

/** Fills the filesystem at `dir` with 4 KiB files until it is full; returns their paths. */
async function fill(dir: string): Promise<string[]> {
  const files: string[] = []
  for (let i = 0; ; i++) {
    const path = join(dir, `filler-${i}`)
    try {
      await writeFile(path, Buffer.alloc(4096))
      files.push(path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
      await rm(path, { force: true })
      return files
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stale locks: judged by the holder's pid, its start time and the boot id

t.test('lock: a dead holder is broken at once, a live one is waited for, a recycled pid is not trusted', async (t) => {
  const home = tempDir('faults-lock', t)
  const lock = join(home, LOCK_FILE)
  // A real process (`cat`, cheaper to start than node): its identity read while it runs, then
  // it exits when its stdin ends.
  const child = spawnProcess('cat', [], { stdin: 'pipe' })
  const pid = child.child.pid!
  const startTime = await startTimeOf(pid)
  const body = (over: Json = {}) => JSON.stringify({ pid, startTime, bootId: BOOT_ID, createdAt: Date.now(), token: 'theirs', ...over })
  // A waiter that gives up at its first look: whatever it did not break right away, it did not break.
  const tryOnce = () => withFileLock(home, async () => 'ran', { timeoutMs: 0 })

  const live = body()
  await writeFile(lock, live)
  const alive = await storeError(t, tryOnce())
  t.equal(alive.message, 'store locked by another process', 'a live holder is waited for')
  t.equal(await readFile(lock, 'utf8'), live, 'its lock is left alone')

  await writeFile(lock, body({ startTime: String(Number(startTime) + 1) }))
  t.equal(await tryOnce(), 'ran', 'a live pid that started at another time (recycled) is broken at once')
  t.same(await readdir(home), [], 'and the new lock released')

  await writeFile(lock, body({ bootId: '00000000-0000-0000-0000-000000000000', pid: 999_999 }))
  t.equal((await storeError(t, tryOnce())).message, 'store locked by another process', 'another boot (another host): cannot be judged, so waited for while fresh')
  const old = new Date(Date.now() - 31_000)
  await utimes(lock, old, old)
  t.equal(await tryOnce(), 'ran', 'the age rule breaks it once untouched for 30 s')

  await writeFile(lock, 'not json')
  t.equal((await storeError(t, tryOnce())).message, 'store locked by another process', 'an unreadable body is waited for while fresh')
  await utimes(lock, old, old)
  t.equal(await tryOnce(), 'ran', 'and broken by age')

  child.child.stdin!.end()
  await child.exited
  await writeFile(lock, body())
  const doc = apiKeyDoc()
  await new FileStore(home).save(doc)
  t.same(await new FileStore(home).load(), doc, 'a save behind a dead holder goes through without waiting')
  t.same(await readdir(home), ['auth.json'], 'the dead holder’s lock is gone')

  // The lock a holder writes names it the same way.
  let seen: Json = {}
  await withFileLock(home, async () => void (seen = JSON.parse(await readFile(lock, 'utf8')) as Json))
  t.same(
    { pid: seen.pid, startTime: seen.startTime, bootId: seen.bootId },
    { pid: process.pid, startTime: await startTimeOf(process.pid), bootId: BOOT_ID },
    'the lock body records pid, start time and boot id',
  )
})

// ---------------------------------------------------------------------------------------------
// A writer killed mid-save

t.test('kill -9 mid-save: the 0600 temp file it left is removed by the next store, the lock broken at once', async (t) => {
  const dir = tempDir('faults-kill', t)
  const home = join(dir, 'home')
  await mkdir(home, { mode: 0o700 })
  const key = canary('sk-killed')
  const script = join(dir, 'saver.mjs')
  // Big documents keep each save in its write for a while, so the kill lands inside one.
  await writeFile(
    script,
    `import { FileStore } from ${JSON.stringify(FILE_STORE_URL)}
const [home, key] = process.argv.slice(2)
const store = new FileStore(home)
const doc = { auth_mode: 'apikey', OPENAI_API_KEY: key, padding: 'x'.repeat(2 << 20) }
for (;;) await store.save(doc)
`,
  )
  const isTemp = (n: string) => /^auth\.json\..+\.tmp$/.test(n)
  let temps: string[] = []
  for (let attempt = 0; attempt < 10 && temps.length === 0; attempt++) {
    // Killed the moment a save creates its temp file.
    let created!: () => void
    const tempCreated = new Promise<void>((resolve) => (created = resolve))
    const watcher = watch(home, (_event, name) => {
      if (name !== null && isTemp(name)) created()
    })
    // Only PATH: no tap loader hooks in NODE_OPTIONS, which would slow each start-up down.
    const saver = spawnProcess(process.execPath, [script, home, key], { env: { PATH: process.env.PATH ?? '' }, record: ['stderr'] })
    await Promise.race([tempCreated, saver.exited])
    saver.kill()
    watcher.close()
    t.equal((await saver.exited).signal, 'SIGKILL', 'the saver was killed')
    temps = (await readdir(home)).filter(isTemp)
  }
  t.ok(temps.length > 0, 'a kill landed inside a save and left its temp file')
  for (const name of temps) t.equal(await modeOf(join(home, name)), 0o600, `${name} was only ever readable by its owner`)
  t.ok((await readdir(home)).includes(LOCK_FILE), 'the killed saver still "holds" the lock')

  await new FileStore(home).removeLeftovers()
  t.same((await readdir(home)).filter(isTemp), temps, 'a young temp file may be a live save: kept')
  const later = new ManualClock({ wallMs: Date.now() + TEMP_MAX_AGE_MS + 1_000 })
  await new FileStore(home, { clock: later }).removeLeftovers()
  t.same((await readdir(home)).filter(isTemp), [], 'a store starting later removes it: no copy of the key left behind')

  const doc = apiKeyDoc()
  await new FileStore(home).save(doc)
  t.same(await new FileStore(home).load(), doc, 'the next save is not blocked by the dead saver’s lock')
  t.same(await leftovers(home), [], 'nothing else remains')

  // Before every save, and when the server or the CLI starts: an old temp file goes.
  const stale = join(home, 'auth.json.0123456789abcdef.tmp')
  const old = new Date(Date.now() - TEMP_MAX_AGE_MS - 1_000)
  await writeFile(stale, JSON.stringify(apiKeyDoc()), { mode: 0o600 })
  await utimes(stale, old, old)
  await new FileStore(home).save(doc)
  t.same(await leftovers(home), [], 'a save removes an old temp file first')
  await writeFile(stale, JSON.stringify(apiKeyDoc()), { mode: 0o600 })
  await utimes(stale, old, old)
  const status = await runCommand(['status'], { env: { APP_SERVER_HOME: home } })
  t.equal(status.code, 0, status.stderr)
  t.same(await leftovers(home), [], '`status` (the account service starting) removed it')
})

// ---------------------------------------------------------------------------------------------
// A corrupt store, and a directory in the way (no mount needed)

t.test('corrupt auth.json: status says what is wrong, a login keeps the bad file aside (0600)', async (t) => {
  const cases: Array<[string, (secret: string) => string, string]> = [
    ['garbage', (s) => `garbage ${s}`, 'auth.json is not valid JSON'],
    ['truncated', (s) => `{"auth_mode": "apikey", "OPENAI_API_KEY": "${s}`, 'auth.json is not valid JSON'],
    ['wrong shape', (s) => JSON.stringify({ OPENAI_API_KEY: [s] }), 'auth.json has an unexpected shape: at /OPENAI_API_KEY: must be string'],
  ]
  for (const [what, content, reason] of cases) {
    const home = tempDir('faults-corrupt', t)
    const env = { APP_SERVER_HOME: home }
    const bad = content(canary('sk-in-bad-file'))
    await writeFile(join(home, 'auth.json'), bad, { mode: 0o644 })

    const status = await runCommand(['status'], { env })
    t.equal(status.code, 4, `${what}: status fails (unreadable store)`)
    t.equal(status.stderr, `error: the stored credentials cannot be read: ${reason}\n`, `${what}: and says why`)
    t.equal(status.stdout, '', `${what}: and does not claim "Not logged in"`)

    const key = canary('sk-new')
    const login = await runCommand(['login', '--with-api-key'], { env, input: key })
    t.equal(login.code, 0, `${what}: ${login.stderr}`)
    const kept = (await readdir(home)).filter((n) => n.startsWith('auth.json.corrupt-'))
    t.equal(kept.length, 1, `${what}: the bad file was kept aside`)
    t.match(kept[0], /^auth\.json\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/, `${what}: named with a timestamp`)
    t.equal(await readFile(join(home, kept[0]!), 'utf8'), bad, `${what}: unchanged`)
    t.equal(await modeOf(join(home, kept[0]!)), 0o600, `${what}: readable by its owner only`)
    t.same(await new FileStore(home).load(), apiKeyDoc(key), `${what}: the new login is stored`)
    t.equal((await runCommand(['status'], { env })).code, 0, `${what}: status is fine again`)
  }

  // Logout removes the credential, but a file it cannot read is kept, not deleted.
  const home = tempDir('faults-corrupt-logout', t)
  const bad = `{"OPENAI_API_KEY": "${canary('sk-half')}`
  await writeFile(join(home, 'auth.json'), bad, { mode: 0o600 })
  const logout = await runCommand(['logout'], { env: { APP_SERVER_HOME: home } })
  t.equal(logout.code, 0, logout.stderr)
  t.equal(logout.stdout, 'Successfully logged out\n', 'an unreadable store is not "Not logged in"')
  const names = await readdir(home)
  t.equal(names.length, 1, 'auth.json is gone')
  t.match(names[0], /^auth\.json\.corrupt-/, 'kept aside instead')
  t.equal(await readFile(join(home, names[0]!), 'utf8'), bad, 'unchanged')
})

t.test('logout with a directory where auth.json should be: exit 1, one line, nothing claimed', async (t) => {
  const home = tempDir('faults-eisdir', t)
  const env = { APP_SERVER_HOME: home }
  await mkdir(join(home, 'auth.json'))
  await writeFile(join(home, 'auth.json', 'x'), 'x')
  const status = await runCommand(['status'], { env })
  t.equal(status.code, 4)
  t.equal(status.stderr, 'error: the stored credentials cannot be read: a directory is in the way\n')
  const logout = await runCommand(['logout'], { env })
  t.equal(logout.code, 1, 'logout fails')
  t.equal(logout.stderr, 'error: failed to log out: a directory is in the way\n', 'with a one-line reason and no path')
  t.equal(logout.stdout, '', 'and never says "Successfully logged out"')
})

// ---------------------------------------------------------------------------------------------
// A full and a read-only filesystem, through the server's JSON-RPC methods

const mount = mountTmpfs(64)
const noMount = mount === null && 'cannot mount a tmpfs here (needs root): the full and read-only filesystem cases were not run'
// Also when the test below is filtered out; it unmounts sooner itself.
t.teardown(() => mount?.unmount())

t.test('disk full and read-only: errors say so without a path, nothing left behind, logout changes nothing', { skip: noMount }, async (t) => {
  if (mount === null) return
  const mnt = mount.dir
  // One teardown, in order: nothing may hold the filesystem when it is unmounted.
  const closers: (() => Promise<unknown>)[] = []
  t.teardown(async () => {
    for (const close of closers.reverse()) await close()
    mount.unmount()
  })
  const home = join(mnt, 'home')
  await mkdir(home, { mode: 0o700 })
  // Garbage from before the server started: reported at start, and kept when the login replaces it.
  const badSecret = canary('sk-garbage')
  await writeFile(join(home, 'auth.json'), `{${badSecret}`, { mode: 0o600 })
  const server: TestServer = await startServer({ argv: ['--home', home] })
  closers.push(() => server.close())
  const startLine = server.logs.lines.find((l) => l.msg === 'could not load stored credentials')
  t.equal(startLine?.reason, 'auth.json is not valid JSON', 'the server logs at start why the store is unreadable')
  t.match(startLine?.detail, `${home}/auth.json: auth.json is not valid JSON`, 'with the path, in the log')

  const client: RpcClient = await connect(server.wsUrl)
  closers.push(() => client.close())
  await client.initialize()
  const call = async (method: string, params?: unknown): Promise<Json> => {
    const reply = await client.request(method, params)
    const text = JSON.stringify(reply)
    t.notOk(text.includes(mnt), `${method}: no path in the reply`)
    return reply
  }
  const accountRead = async () => ((await call('account/read', {})).result as Json).account
  const updates = () => client.notifications.filter((n) => n.method === 'account/updated').length

  t.equal(await accountRead(), null, 'a corrupt store answers no account…')
  t.ok(
    server.logs.lines.some((l) => l.msg === 'stored credentials are unreadable; answering as logged out' && l.reason === 'auth.json is not valid JSON'),
    '…and account/read logs why',
  )

  const key = canary('sk-first')
  t.same((await call('account/login/start', { type: 'apiKey', apiKey: key })).result, { type: 'apiKey' }, 'login replaces the bad file')
  t.ok((await readdir(home)).some((n) => n.startsWith('auth.json.corrupt-')), 'which was kept aside')

  // Full to the last page: the lock file can be created but not written.
  let fillers = await fill(mnt)
  const updatesBefore = updates()
  const fullLogout = await call('account/logout')
  t.same(fullLogout.error, { code: -32603, message: 'failed to log out: disk full' }, 'a logout that could not clear the store is an error')
  t.same(await accountRead(), { type: 'apiKey' }, 'and the account is still there')
  t.equal(updates(), updatesBefore, 'no account/updated claimed a logout')
  t.same(await new FileStore(home).load(), apiKeyDoc(key), 'the key is still stored')
  const fullLogin = await call('account/login/start', { type: 'apiKey', apiKey: canary('sk-full') })
  t.same(fullLogin.error, { code: -32603, message: 'failed to save api key: disk full' }, 'login: disk full')
  t.same(await leftovers(home), [], 'no lock file left whose body could not be written')
  t.match(server.logs.lines.filter((l) => l.msg === 'could not save the api key').at(-1)?.detail, new RegExp(`^cannot write lock ${home}/auth\\.json\\.lock: ENOSPC$`), 'the log keeps the path and the code')

  // A page at a time, until the lock fits and the temp file does not.
  const saveFailures = () => server.logs.lines.filter((l) => l.msg === 'could not save the api key').map((l) => String(l.detail))
  while (fillers.length > 0 && !saveFailures().some((d) => d.startsWith(`cannot write ${home}/auth.json (`))) {
    await unlink(fillers.pop()!)
    const pageLogin = await call('account/login/start', { type: 'apiKey', apiKey: canary('sk-page') })
    if (pageLogin.error === undefined) break
    t.same(pageLogin.error, { code: -32603, message: 'failed to save api key: disk full' }, 'login: disk full')
    t.same(await leftovers(home), [], 'no temp file and no lock left behind')
  }
  t.ok(saveFailures().some((d) => /^cannot write .*\/auth\.json \((write|fsync|create)\): ENOSPC$/.test(d)), 'a save failed on its temp file: the log keeps the path, the step and the code')
  t.same(await new FileStore(home).load(), apiKeyDoc(key), 'the stored key is the one before')
  await Promise.all(fillers.map((f) => unlink(f)))
  fillers = []

  const writable = bindReadOnly(home)
  closers.push(async () => writable())
  const roLogout = await call('account/logout')
  t.same(roLogout.error, { code: -32603, message: 'failed to log out: read-only file system' }, 'logout: read-only file system')
  const roLogin = await call('account/login/start', { type: 'apiKey', apiKey: canary('sk-ro') })
  t.same(roLogin.error, { code: -32603, message: 'failed to save api key: read-only file system' }, 'login: read-only file system')
  t.same(await accountRead(), { type: 'apiKey' }, 'still logged in with the stored key')
  t.equal(updates(), updatesBefore, 'and never told otherwise')
  t.ok(
    server.logs.lines.some((l) => l.msg === 'could not clear stored credentials' && typeof l.detail === 'string' && l.detail.includes(`${home}/auth.json.lock`) && l.detail.endsWith('EROFS')),
    'the log names the lock file and EROFS',
  )

  writable()
  t.same((await call('account/logout')).result, {}, 'once writable, logout works')
  t.same(await accountRead(), null)
  t.equal(await new FileStore(home).load(), null, 'and the store is empty')
})
