/**
 * Credential stores over real things: real files and modes, two real processes writing the
 * same auth.json, real lock files, the real `@napi-rs/keyring` binding against a Secret
 * Service this test starts itself (dbus-daemon + gnome-keyring-daemon), and against a D-Bus
 * address where nothing listens. Every secret is a canary; every error text seen is recorded.
 */
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, watch } from 'node:fs'
import { chmod, mkdir, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises'
import { delimiter, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { Writable } from 'node:stream'
import {
  AutoStore,
  createStore,
  EphemeralStore,
  FileStore,
  KEYRING_SERVICE,
  keyringAccount,
  KeyringStore,
  withFileLock,
  type KeyringBackend,
} from '../src/account/stores/index.js'
import { LOCK_FILE } from '../src/account/stores/file-store.js'
import type { TimerHandle } from '../src/clock.js'
import { CorruptStoreError, StoreError, type AuthDotJson } from '../src/account/types.js'
import { createLogger } from '../src/log/logger.js'
import { canary, leakedCanaries, record } from './helpers/canary.js'
import { ManualClock } from './helpers/manual-clock.js'
import { spawnProcess, type Spawned } from './helpers/process.js'
import { tempDir } from './helpers/temp-dir.js'
import { gate, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

const STORES_DIR = fileURLToPath(new URL('../src/account/stores/', import.meta.url))
const STORES_INDEX_URL = pathToFileURL(join(STORES_DIR, 'index.js')).href
const KEYRING_STORE_PATH = join(STORES_DIR, 'keyring-store.js')

// ---------------------------------------------------------------------------------------------
// Helpers

function chatgptDoc(): AuthDotJson {
  return {
    auth_mode: 'chatgpt',
    OPENAI_API_KEY: null,
    tokens: { id_token: canary('id'), access_token: canary('access'), refresh_token: canary('refresh'), account_id: 'acct-123' },
    last_refresh: new Date().toISOString(),
  }
}

function apiKeyDoc(): AuthDotJson {
  return { auth_mode: 'apikey', OPENAI_API_KEY: canary('sk') }
}

/** The StoreError `p` rejects with (recorded for the leak check); fails the test otherwise. */
async function storeError(t: Test, p: Promise<unknown>, what: string): Promise<StoreError> {
  try {
    await p
  } catch (err) {
    t.type(err, StoreError, `${what}: rejects with a StoreError`)
    const message = err instanceof Error ? err.message : String(err)
    const detail = err instanceof StoreError ? err.detail : ''
    record(message + '\n' + detail)
    t.same(leakedCanaries(message + '\n' + detail), [], `${what}: no secret in the message or its detail`)
    return err as StoreError
  }
  t.fail(`${what}: expected a StoreError`)
  return new StoreError('did not throw')
}

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777

/** A keyring in memory: what an OS keyring would hold, visible to the test. */
class MemoryKeyring implements KeyringBackend {
  readonly entries = new Map<string, string>()
  async get(service: string, account: string): Promise<string | null> {
    return this.entries.get(`${service}\n${account}`) ?? null
  }
  async set(service: string, account: string, password: string): Promise<void> {
    this.entries.set(`${service}\n${account}`, password)
  }
  async delete(service: string, account: string): Promise<void> {
    this.entries.delete(`${service}\n${account}`)
  }
}

/** A keyring that cannot be reached, failing the way the native binding does. */
class FailingKeyring implements KeyringBackend {
  calls = 0
  constructor(private readonly message = 'Platform failure: DBus error: Failed to connect to socket /run/user/0/bus: No such file or directory') {}
  async get(): Promise<string | null> {
    this.calls++
    throw new Error(this.message)
  }
  async set(): Promise<void> {
    this.calls++
    throw new Error(this.message)
  }
  async delete(): Promise<void> {
    this.calls++
    throw new Error(this.message)
  }
}

/** A pino logger whose every line is kept (and recorded for the leak check). */
function capturingLogger(): { log: ReturnType<typeof createLogger>; lines: () => string } {
  let out = ''
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString()
      record(chunk.toString())
      cb()
    },
  })
  return { log: createLogger('debug', dest), lines: () => out }
}

// ---------------------------------------------------------------------------------------------
// File store

t.test('file store: round trip, 0600 file in a 0700 directory', async (t) => {
  const home = join(tempDir('stores-file', t), 'nested', 'home')
  const store = new FileStore(home)
  t.equal(store.mode, 'file')
  t.equal(await store.load(), null, 'absent file loads as null')
  t.notOk(existsSync(home), 'loading creates nothing')

  const doc = chatgptDoc()
  await store.save(doc)
  t.same(await store.load(), doc, 'a ChatGPT document round-trips')
  t.equal(await modeOf(home), 0o700, 'home created 0700')
  t.equal(await modeOf(join(home, 'auth.json')), 0o600, 'auth.json is 0600')
  t.same(JSON.parse(await readFile(join(home, 'auth.json'), 'utf8')), doc, 'the file is the document, snake_case')

  // A file left readable by someone else is replaced by a 0600 one.
  await chmod(join(home, 'auth.json'), 0o644)
  const key = apiKeyDoc()
  await new FileStore(home).save(key)
  t.same(await store.load(), key, 'an API-key document replaces it')
  t.equal(await modeOf(join(home, 'auth.json')), 0o600, 'still 0600 after replacing a 0644 file')
})

t.test('file store: atomic writes leave no temp or lock files', async (t) => {
  const home = tempDir('stores-atomic', t)
  const store = new FileStore(home)
  for (let i = 0; i < 20; i++) await store.save(i % 2 ? apiKeyDoc() : chatgptDoc())
  await Promise.all([store.save(apiKeyDoc()), store.save(chatgptDoc()), store.save(apiKeyDoc())])
  t.same(await readdir(home), ['auth.json'], 'only auth.json remains')
})

t.test('file store: codex-style nulls load as absent fields', async (t) => {
  const home = tempDir('stores-nulls', t)
  const key = canary('sk')
  await writeFile(join(home, 'auth.json'), JSON.stringify({ OPENAI_API_KEY: key, tokens: null, last_refresh: null, auth_mode: null, extra: 1 }))
  t.same(await new FileStore(home).load(), { OPENAI_API_KEY: key }, 'nulls and unknown fields dropped')
})

t.test('file store: unreadable or malformed auth.json is a StoreError without the content', async (t) => {
  const home = tempDir('stores-bad', t)
  const store = new FileStore(home)
  const file = join(home, 'auth.json')
  const cases: Array<[string, (secret: string) => string]> = [
    ['truncated JSON', (s) => `{"OPENAI_API_KEY": "${s}", "tokens": {"id_token": "${s}`],
    ['not JSON at all', (s) => s],
    ['JSON with a trailing comma', (s) => `{"OPENAI_API_KEY": "${s}",}`],
    ['an array', (s) => JSON.stringify([s])],
    ['a JSON string', (s) => JSON.stringify(s)],
    ['OPENAI_API_KEY a number', (s) => JSON.stringify({ OPENAI_API_KEY: 42, tokens: { id_token: s, access_token: s, refresh_token: s, account_id: null } })],
    ['tokens missing refresh_token', (s) => JSON.stringify({ OPENAI_API_KEY: null, tokens: { id_token: s, access_token: s, account_id: null } })],
    ['tokens a string', (s) => JSON.stringify({ OPENAI_API_KEY: null, tokens: s })],
    ['account_id a number', (s) => JSON.stringify({ OPENAI_API_KEY: null, tokens: { id_token: s, access_token: s, refresh_token: s, account_id: 7 } })],
    ['unknown auth_mode', (s) => JSON.stringify({ OPENAI_API_KEY: null, auth_mode: s })],
    ['last_refresh a number', (s) => JSON.stringify({ OPENAI_API_KEY: s, last_refresh: 1 })],
  ]
  for (const [what, content] of cases) {
    const secret = canary('bad-file')
    await writeFile(file, content(secret), { mode: 0o600 })
    const err = await storeError(t, store.load(), what)
    t.notMatch(err.message, secret, `${what}: content not in the message`)
  }

  // The schema names the offending field (never its value).
  const named: Array<[string, unknown, RegExp]> = [
    ['an array', [], /has an unexpected shape: at \/: /],
    ['tokens missing refresh_token', { OPENAI_API_KEY: null, tokens: { id_token: 'x', access_token: 'y' } }, /at \/tokens: .*refresh_token/],
    ['account_id a number', { tokens: { id_token: 'x', access_token: 'y', refresh_token: 'z', account_id: 7 } }, /at \/tokens\/account_id: /],
    ['last_refresh a number', { OPENAI_API_KEY: null, last_refresh: 1 }, /at \/last_refresh: /],
    ['unknown auth_mode', { OPENAI_API_KEY: null, auth_mode: 'sso' }, /at \/auth_mode: /],
  ]
  for (const [what, doc, where] of named) {
    await writeFile(file, JSON.stringify(doc), { mode: 0o600 })
    const err = await storeError(t, store.load(), what)
    t.match(err.message, where, `${what}: ${err.message}`)
    t.ok(err.message.startsWith('auth.json has an unexpected shape: '), `${what}: says which document, by name only`)
    t.ok(err.detail.startsWith(`${file}: auth.json has an unexpected shape: `), `${what}: the detail (for logs) has the path`)
    t.type(err, CorruptStoreError, `${what}: a corrupt store, not an unreadable one`)
  }

  await rm(file)
  await mkdir(file)
  const err = await storeError(t, store.load(), 'auth.json is a directory')
  t.equal(err.message, 'a directory is in the way', 'says why it could not be read, without the path')
  t.equal(err.detail, `cannot read ${file}: EISDIR`, 'the detail (for logs) has the path and the code')
})

t.test('file store: clear is idempotent', async (t) => {
  const home = tempDir('stores-clear', t)
  const store = new FileStore(home)
  await store.clear()
  await store.save(chatgptDoc())
  await store.clear()
  t.equal(await store.load(), null, 'nothing after clear')
  await store.clear()
  t.same(await readdir(home), [], 'no file, no lock left behind')
})

t.test('file lock: a stale lock (older than 30 s) is broken', async (t) => {
  const home = tempDir('stores-stale', t)
  const lock = join(home, LOCK_FILE)
  await writeFile(lock, JSON.stringify({ pid: 999_999, createdAt: Date.now() - 60_000, token: 'dead' }))
  const old = new Date(Date.now() - 31_000)
  await utimes(lock, old, old)

  const started = Date.now()
  const doc = apiKeyDoc()
  await new FileStore(home).save(doc)
  t.ok(Date.now() - started < 2_000, 'saved without waiting for the timeout')
  t.same(await new FileStore(home).load(), doc, 'saved')
  t.same(await readdir(home), ['auth.json'], 'the stale lock is gone')
})

/**
 * A manual clock that says when the lock's waiter starts waiting on it: `waiting()` resolves once
 * a timeout is pending, so a test knows the waiter found the lock taken and judged it live.
 */
class WaiterClock extends ManualClock {
  private wake: (() => void)[] = []
  constructor() {
    // Lock files carry real mtimes: the clock starts at the real time, so their age is judged right.
    super({ wallMs: Date.now() })
  }
  override setTimeout(fn: () => void, ms: number): TimerHandle {
    const handle = super.setTimeout(fn, ms)
    for (const wake of this.wake.splice(0)) wake()
    return handle
  }
  waiting(): Promise<void> {
    return this.pendingCount > 0 ? Promise.resolve() : new Promise((resolve) => this.wake.push(resolve))
  }
}

/** The longest retry pause of the lock's backoff (100 ms and its jitter). */
const MAX_RETRY_PAUSE_MS = 200

t.test('file lock: a live lock makes the second caller wait', async (t) => {
  const home = tempDir('stores-live', t)
  const lock = join(home, LOCK_FILE)
  // Another process's lock, just taken.
  await writeFile(lock, JSON.stringify({ pid: 999_999, createdAt: Date.now(), token: 'other' }))
  const doc = chatgptDoc()
  let settled = false
  const clock = new WaiterClock()
  const saving = withFileLock(home, () => new FileStore(home).save(doc), { clock }).finally(() => (settled = true))
  await clock.waiting()
  t.notOk(settled, 'save is still waiting')
  t.notOk(existsSync(join(home, 'auth.json')), 'nothing written while the lock is held')
  await unlink(lock)
  clock.advance(MAX_RETRY_PAUSE_MS)
  await saving
  t.same(await new FileStore(home).load(), doc, 'written once the lock was released')

  // Within one process too: B's save waits for A's critical section to end.
  const events: string[] = []
  const aIn = gate()
  const aOut = gate()
  const a = withFileLock(home, async () => {
    events.push('A in')
    aIn.open()
    await aOut.opened
    events.push('A out')
  })
  await aIn.opened
  const bClock = new WaiterClock()
  const b = withFileLock(home, () => new FileStore(home).save(apiKeyDoc()), { clock: bClock }).then(() => events.push('B saved'))
  // B found the lock taken and waits to retry: only then does A leave.
  await bClock.waiting()
  aOut.open()
  await a
  bClock.advance(MAX_RETRY_PAUSE_MS)
  await b
  t.same(events, ['A in', 'A out', 'B saved'], 'second caller ran after the first released')
})

t.test('file lock: bounded wait, re-entrant, kept fresh while held', async (t) => {
  const home = tempDir('stores-bounded', t)
  const lock = join(home, LOCK_FILE)
  await writeFile(lock, JSON.stringify({ pid: 999_999, createdAt: Date.now(), token: 'other' }))
  let ran = false
  let gaveUp = false
  const clock = new WaiterClock()
  const waiting = withFileLock(home, async () => void (ran = true), { timeoutMs: 300, clock }).finally(() => (gaveUp = true))
  // Time passes only as the test moves it: a pause at a time until the waiter gives up.
  let waitedMs = 0
  for (;;) {
    await Promise.race([clock.waiting(), waiting.catch(() => undefined)])
    if (gaveUp) break
    t.ok(waitedMs < 300, `still waiting after ${waitedMs} ms`)
    clock.advance(MAX_RETRY_PAUSE_MS / 2)
    waitedMs += MAX_RETRY_PAUSE_MS / 2
  }
  const err = await storeError(t, waiting, 'held lock')
  t.equal(err.message, 'store locked by another process', 'says who is in the way, without the path')
  t.match(err.detail, /^timed out after 300 ms waiting for lock .*auth\.json\.lock$/, 'the detail (for logs) says it timed out')
  t.ok(waitedMs >= 300 && waitedMs <= 300 + MAX_RETRY_PAUSE_MS, `gave up after the bounded wait (${waitedMs} ms)`)
  t.notOk(ran, 'fn did not run')
  t.ok(existsSync(lock), "someone else's lock is left alone")
  await unlink(lock)

  // Nested: save inside withFileLock does not wait for itself.
  const doc = apiKeyDoc()
  await withFileLock(home, async () => {
    const store = new FileStore(home)
    t.equal(await store.load(), null)
    await store.save(doc)
    t.ok(existsSync(lock), 'lock held during the critical section')
  }, { timeoutMs: 1_000 })
  t.same(await new FileStore(home).load(), doc, 're-entrant save went through')

  // A holder slower than staleMs refreshes its lock, so it is not broken under it. Each party has
  // a clock of its own, moved in turn: the holder's heartbeat lands before the waiter judges.
  const STALE_MS = 600
  const BEAT_MS = STALE_MS / 3
  const events: string[] = []
  const slowIn = gate()
  const slowOut = gate()
  const holderClock = new WaiterClock()
  const slow = withFileLock(home, async () => {
    events.push('slow in')
    slowIn.open()
    await slowOut.opened
    events.push('slow out')
  }, { staleMs: STALE_MS, clock: holderClock })
  await slowIn.opened
  const waiterClock = new WaiterClock()
  const other = withFileLock(home, async () => void events.push('other'), { staleMs: STALE_MS, clock: waiterClock })
  await waiterClock.waiting()
  // Three times staleMs: without the heartbeat, the waiter would find the lock stale and break it.
  const touched = (): Promise<void> => new Promise((resolve) => {
    const watcher = watch(lock, () => {
      watcher.close()
      resolve()
    })
  })
  for (let passed = 0; passed < 3 * STALE_MS; passed += BEAT_MS) {
    const beat = touched()
    holderClock.advance(BEAT_MS)
    await withTimeout(beat, 10_000, 'the heartbeat to touch the lock')
    t.equal(Math.round((await stat(lock)).mtimeMs), holderClock.wallMs(), `the holder refreshed its lock at +${passed + BEAT_MS} ms`)
    // The waiter's retry falls due; it judges the lock again, then waits again (or, had it broken
    // the lock, has run by the time its heartbeat is scheduled).
    waiterClock.advance(BEAT_MS)
    await Promise.race([waiterClock.waiting(), other])
    t.same(events, ['slow in'], `the waiter still waits at +${passed + BEAT_MS} ms`)
  }
  slowOut.open()
  await slow
  waiterClock.advance(MAX_RETRY_PAUSE_MS)
  await other
  t.same(events, ['slow in', 'slow out', 'other'], 'a live holder is not taken for stale')
})

// ---------------------------------------------------------------------------------------------
// Ephemeral store

t.test('ephemeral store: round trip and isolation', async (t) => {
  const store = createStore('ephemeral', '/nonexistent/home')
  t.type(store, EphemeralStore)
  t.equal(await store.load(), null)
  const doc = chatgptDoc()
  const original = structuredClone(doc)
  await store.save(doc)
  doc.tokens!.access_token = 'changed-after-save'
  t.same(await store.load(), original, 'mutating the saved object does not change the store')
  const loaded = await store.load()
  loaded!.tokens!.refresh_token = 'changed-after-load'
  loaded!.OPENAI_API_KEY = 'changed'
  t.same(await store.load(), original, 'mutating a loaded object does not change the store')
  await store.clear()
  t.equal(await store.load(), null)
  await store.clear()
  t.notOk(existsSync('/nonexistent/home'), 'nothing touched the disk')
})

// ---------------------------------------------------------------------------------------------
// Keyring store over an injected backend

t.test('keyring store: one entry per home, under the app-server service', async (t) => {
  const dir = tempDir('stores-kr', t)
  const backend = new MemoryKeyring()
  const home = join(dir, 'home')
  const store = createStore('keyring', home, { keyring: backend })
  t.type(store, KeyringStore)
  t.equal(store.mode, 'keyring')

  const expectedAccount = 'home-' + createHash('sha256').update(resolve(home)).digest('hex').slice(0, 16)
  t.equal(keyringAccount(home), expectedAccount)
  t.equal(keyringAccount(join(dir, '.', 'home')), expectedAccount, 'the account is of the absolute, normalised path')

  t.equal(await store.load(), null)
  const doc = chatgptDoc()
  await store.save(doc)
  t.same([...backend.entries.keys()], [`${KEYRING_SERVICE}\n${expectedAccount}`], 'service `app-server auth`, account home-<16 hex>')
  t.same(JSON.parse(backend.entries.get(`${KEYRING_SERVICE}\n${expectedAccount}`)!), doc, 'the password is the auth.json document')
  t.same(await store.load(), doc)
  t.notOk(existsSync(home), 'no file written')

  const other = createStore('keyring', join(dir, 'other'), { keyring: backend })
  t.equal(await other.load(), null, 'another home has its own entry')

  await store.clear()
  t.equal(await store.load(), null)
  await store.clear()

  const secret = canary('kr-bad')
  backend.entries.set(`${KEYRING_SERVICE}\n${expectedAccount}`, `{"OPENAI_API_KEY":"${secret}"`)
  const err = await storeError(t, store.load(), 'malformed keyring entry')
  t.notMatch(err.message, secret)
})

t.test('keyring store: an unreachable keyring fails every operation clearly', async (t) => {
  const backend = new FailingKeyring()
  const store = createStore('keyring', '/tmp/unused-home', { keyring: backend })
  for (const [what, op] of [
    ['load', () => store.load()],
    ['save', () => store.save(chatgptDoc())],
    ['clear', () => store.clear()],
  ] as const) {
    const err = await storeError(t, op(), what)
    t.match(err.message, /^keyring unavailable: Platform failure: DBus error/, `${what}: keyring unavailable: <reason>`)
  }
  t.equal(backend.calls, 3)

  // A backend whose message quotes the password being stored: the reason is withheld.
  const doc = apiKeyDoc()
  const leaky = createStore('keyring', '/tmp/unused-home', { keyring: new FailingKeyring(`cannot store ${doc.OPENAI_API_KEY}`) })
  const err = await storeError(t, leaky.save(doc), 'leaky backend')
  t.equal(err.message, 'keyring unavailable: keyring error (details withheld)')
})

// ---------------------------------------------------------------------------------------------
// Auto store

t.test('auto store: falls back to auth.json when the keyring fails', async (t) => {
  const home = join(tempDir('stores-auto-fail', t), 'home')
  const { log, lines } = capturingLogger()
  const store = createStore('auto', home, { keyring: new FailingKeyring(), log })
  t.type(store, AutoStore)
  t.equal(await store.load(), null, 'nothing anywhere')

  const doc = chatgptDoc()
  await store.save(doc)
  t.ok(existsSync(join(home, 'auth.json')), 'saved to the file')
  t.equal(await modeOf(join(home, 'auth.json')), 0o600, 'file is 0600')
  t.same(await store.load(), doc, 'loaded from the file')
  t.same(await new FileStore(home).load(), doc, 'it is a plain file-store document')

  await store.clear()
  t.notOk(existsSync(join(home, 'auth.json')), 'clear removed the file despite the keyring')
  t.equal(await store.load(), null)

  t.match(lines(), /keyring unavailable/, 'the fallback was logged')
  t.same(leakedCanaries(lines()), [], 'the log holds no secret')
})

t.test('auto store: a working keyring keeps secrets off the disk', async (t) => {
  const home = join(tempDir('stores-auto-ok', t), 'home')
  const backend = new MemoryKeyring()
  const { log, lines } = capturingLogger()
  const store = createStore('auto', home, { keyring: backend, log })

  const doc = apiKeyDoc()
  await store.save(doc)
  t.notOk(existsSync(join(home, 'auth.json')), 'no auth.json written')
  t.equal(backend.entries.size, 1, 'stored in the keyring')
  t.same(await store.load(), doc)

  // A file saved earlier (while the keyring was down) is read when the keyring is empty…
  await store.clear()
  const older = chatgptDoc()
  await new FileStore(home).save(older)
  t.same(await store.load(), older, 'empty keyring: the file is used')
  // …and removed once the keyring holds the credential.
  const newer = chatgptDoc()
  await store.save(newer)
  t.notOk(existsSync(join(home, 'auth.json')), 'the older plaintext copy is gone')
  t.same(await store.load(), newer)

  await new FileStore(home).save(older)
  await store.clear()
  t.equal(backend.entries.size, 0, 'keyring cleared')
  t.notOk(existsSync(join(home, 'auth.json')), 'file cleared')
  t.equal(lines(), '', 'nothing logged')
})

// ---------------------------------------------------------------------------------------------
// Real processes: two store workers (node processes running store operations on command) on
// one home, and the real @napi-rs/keyring binding against a Secret Service. libdbus reads the
// session bus address once per process, so the workers start with the bus they will use.

interface Step {
  /** `files`: which of `homes` hold an auth.json at that point. */
  op: 'save' | 'load' | 'clear' | 'raw' | 'files'
  mode?: 'keyring' | 'auto' | 'file'
  home?: string
  homes?: string[]
  /** save: index of the document; load/raw: index expected, or null. */
  doc?: number | null
}
interface StepResult {
  ok: boolean
  files?: string[]
  error?: { name: string; message: string }
}

/**
 * A worker answers each command (a JSON line on stdin) with one JSON line carrying its id:
 * - `race`: saves documents and, after each save, reads the file back; every read must be one
 *   whole document some writer saved (never a half-written one);
 * - `count`: increments, under the lock, a counter kept in last_refresh (milliseconds since the
 *   epoch: no secret needed);
 * - `steps`: store operations; it reports only booleans and error texts.
 */
const WORKER_SCRIPT = `import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { isDeepStrictEqual } from 'node:util'
import { createStore, FileStore, keyringAccount, KEYRING_SERVICE, withFileLock } from ${JSON.stringify(STORES_INDEX_URL)}
const require = createRequire(${JSON.stringify(KEYRING_STORE_PATH)})

async function race({ home, docs, from, to }) {
  const store = new FileStore(home)
  let badReads = 0
  for (let i = from; i < to; i++) {
    await store.save(docs[i])
    const seen = await store.load()
    if (!docs.some((d) => isDeepStrictEqual(d, seen))) badReads++
  }
  return { badReads }
}

async function count({ home, n }) {
  const store = new FileStore(home)
  for (let i = 0; i < n; i++) {
    await withFileLock(home, async () => {
      const cur = await store.load()
      const count = cur?.last_refresh ? Date.parse(cur.last_refresh) : 0
      await store.save({ OPENAI_API_KEY: null, last_refresh: new Date(count + 1).toISOString() })
    })
  }
  return { counted: n }
}

async function steps({ docs, steps }) {
  const same = (got, index) => (index === null ? got === null : isDeepStrictEqual(got, docs[index]))
  const results = []
  for (const s of steps) {
    try {
      if (s.op === 'files') {
        results.push({ ok: true, files: s.homes.filter((h) => existsSync(join(h, 'auth.json'))) })
        continue
      }
      if (s.op === 'raw') {
        // Straight from the OS keyring, past the store: is the entry really there?
        const { Entry } = require('@napi-rs/keyring')
        const text = new Entry(KEYRING_SERVICE, keyringAccount(s.home), { linux: { store: 'secret-service' } }).getPassword()
        results.push({ ok: same(text === null ? null : JSON.parse(text), s.doc) })
        continue
      }
      const store = createStore(s.mode, s.home)
      if (s.op === 'save') await store.save(docs[s.doc])
      if (s.op === 'clear') await store.clear()
      results.push({ ok: s.op === 'load' ? same(await store.load(), s.doc) : true })
    } catch (err) {
      results.push({ ok: false, error: { name: String(err?.name), message: String(err?.message) } })
    }
  }
  return { results }
}

const commands = { race, count, steps }
process.stdout.write('ready\\n')
for await (const line of createInterface({ input: process.stdin })) {
  const { id, op, ...args } = JSON.parse(line)
  process.stdout.write(JSON.stringify({ id, ...(await commands[op](args)) }) + '\\n')
}
`

let nextCommandId = 1

interface Worker {
  readonly name: string
  readonly process: Spawned
  /** Sends one command; resolves with the worker's answer to it. */
  request(op: string, args: object): Promise<Record<string, unknown>>
}

/** Started with `env` only: no tap loader hooks in NODE_OPTIONS, which slow each start-up down. */
function startWorker(name: string, script: string, env: NodeJS.ProcessEnv): Worker {
  // stderr is recorded for the leak check; stdout carries `ready` and the answers, recorded as read.
  const p = spawnProcess(process.execPath, [script], { env, stdin: 'pipe', timeoutMs: 120_000, record: ['stderr'] })
  return {
    name,
    process: p,
    async request(op, args) {
      const id = nextCommandId++
      p.child.stdin!.write(JSON.stringify({ id, op, ...args }) + '\n')
      const line = (await p.waitFor('stdout', new RegExp(`^\\{"id":${id},.*$`, 'm')))[0]
      record(line)
      return JSON.parse(line) as Record<string, unknown>
    },
  }
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, bin)))
}

// In this process: no other test here loads the native binding, and libdbus reads the bus
// address when it first connects, so this one is the address it keeps.
t.test('real keyring, no D-Bus listening: keyring unavailable, auto uses the file', { skip: process.platform !== 'linux' && 'Secret Service checks are Linux-only' }, async (t) => {
  const dir = tempDir('stores-nobus', t)
  const busBefore = process.env.DBUS_SESSION_BUS_ADDRESS
  process.env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${join(dir, 'no-such-bus-socket')}`
  t.teardown(() => {
    if (busBefore === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS
    else process.env.DBUS_SESSION_BUS_ADDRESS = busBefore
  })
  const doc = chatgptDoc()
  const kHome = join(dir, 'k')
  const aHome = join(dir, 'a')
  const keyring = createStore('keyring', kHome)
  for (const [what, op] of [
    ['load', () => keyring.load()],
    ['save', () => keyring.save(doc)],
    ['clear', () => keyring.clear()],
  ] as const) {
    const err = await storeError(t, op(), `keyring ${what}`)
    t.equal(err.name, 'StoreError', `keyring ${what}: StoreError`)
    t.match(err.message, /^keyring unavailable: \S/, `keyring ${what}: "${err.message}"`)
  }
  t.notOk(existsSync(join(kHome, 'auth.json')), 'keyring mode never writes the file')
  const auto = createStore('auto', aHome)
  await auto.save(doc)
  t.same(await auto.load(), doc, 'auto: saved and loaded back')
  t.equal(await modeOf(join(aHome, 'auth.json')), 0o600, 'auto fell back to a 0600 auth.json')
})

const KEYRING_BINS = ['dbus-daemon', 'dbus-send', 'gnome-keyring-daemon']
const missingBins = KEYRING_BINS.filter((b) => !onPath(b))
const keyringSkip =
  process.platform !== 'linux'
    ? 'Secret Service checks are Linux-only'
    : missingBins.length > 0
      ? `real Secret Service not tested: ${missingBins.join(', ')} not installed (Debian: apt-get install gnome-keyring dbus; see .ci/keyring-deps.sh)`
      : false

function execText(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  // execFile's error is an Error; its Omit<>-built type hides that from the lint.
  // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
  return new Promise((res, rej) => execFile(cmd, args, { env, timeout: 10_000 }, (err, stdout) => (err ? rej(err) : res(stdout))))
}

/** A private session bus with an unlocked gnome-keyring on it, torn down with the test. */
async function startSecretService(t: Test, dir: string): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    XDG_RUNTIME_DIR: join(dir, 'run'),
    XDG_DATA_HOME: join(dir, 'data'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_CACHE_HOME: join(dir, 'cache'),
  }
  await mkdir(join(dir, 'run'), { mode: 0o700 })

  const [address, pid] = (await execText('dbus-daemon', ['--session', '--fork', '--print-address=1', '--print-pid=1'], env)).trim().split('\n')
  t.ok(address && pid, 'dbus-daemon printed its address and pid')
  t.teardown(() => {
    try {
      process.kill(Number(pid), 'SIGTERM')
    } catch {
      // already gone
    }
  })
  env.DBUS_SESSION_BUS_ADDRESS = address

  // --foreground keeps it our child (killed by handle); --unlock reads the password on stdin.
  const daemon = spawn('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], { env, stdio: ['pipe', 'ignore', 'pipe'] })
  let daemonErr = ''
  daemon.stderr.on('data', (d: Buffer) => (daemonErr += d.toString()))
  daemon.stdin.end(canary('keyring-password'))
  t.teardown(() => void daemon.kill('SIGTERM'))

  // Ready once it owns org.freedesktop.secrets. Asking before that would make the bus
  // activate a second, locked daemon of its own.
  const deadline = Date.now() + 10_000
  for (;;) {
    const reply = await execText(
      'dbus-send',
      ['--session', '--dest=org.freedesktop.DBus', '--print-reply', '/org/freedesktop/DBus', 'org.freedesktop.DBus.NameHasOwner', 'string:org.freedesktop.secrets'],
      env,
    ).catch(() => '')
    if (/boolean true/.test(reply)) break
    if (daemon.exitCode !== null || Date.now() > deadline) {
      record(daemonErr)
      throw new Error(`gnome-keyring-daemon did not come up (exit ${daemon.exitCode}): ${daemonErr.slice(0, 500)}`)
    }
    await sleep(50)
  }
  return env
}

t.test('real processes: two store workers on one home', async (t) => {
  const dir = tempDir('stores-workers', t)
  // The Secret Service first, when it can run: the workers start on its bus.
  const env = keyringSkip === false ? await startSecretService(t, dir) : { PATH: process.env.PATH ?? '' }
  const script = join(dir, 'worker.mjs')
  await writeFile(script, WORKER_SCRIPT)
  // One pair for every check below: each start-up costs a node process and the store's imports.
  const workers = [startWorker('worker A', script, env), startWorker('worker B', script, env)] as const
  t.teardown(() => workers.forEach((w) => w.process.kill()))
  await Promise.all(workers.map((w) => w.process.waitFor('stdout', /ready\n/)))

  await t.test('two processes saving at once never corrupt auth.json', async (t) => {
    const home = join(dir, 'race')
    // 50 saves each: every save holds the lock across an fsync, so the two writers stay
    // interleaved from the first save to the last; a torn write would show in the first overlap.
    const PER_PROCESS = 50
    const docs = Array.from({ length: 2 * PER_PROCESS }, (_, i) => (i % 3 === 0 ? apiKeyDoc() : chatgptDoc()))
    // Sent to both before either answers, so their writes interleave.
    const answers = await Promise.all(workers.map((w, i) => w.request('race', { home, docs, from: i * PER_PROCESS, to: (i + 1) * PER_PROCESS })))
    for (const [i, w] of workers.entries()) t.equal(answers[i]?.badReads, 0, `${w.name} never read a partial document`)
    const final = await new FileStore(home).load()
    t.ok(
      docs.some((d) => isDeepStrictEqual(d, final)),
      'auth.json parses and is one of the written documents',
    )
    t.same(
      (await readdir(home)).filter((f) => f !== 'auth.json'),
      [],
      'no .tmp or lock files remain',
    )
    t.equal(await modeOf(join(home, 'auth.json')), 0o600, 'still 0600')
  })

  await t.test('file lock: read-modify-write from two processes loses no update', async (t) => {
    const home = join(dir, 'rmw')
    const answers = await Promise.all(workers.map((w) => w.request('count', { home, n: 50 })))
    t.same(answers.map((a) => a.counted), [50, 50], 'each worker counted 50')
    const final = await new FileStore(home).load()
    t.equal(final?.last_refresh ? Date.parse(final.last_refresh) : -1, 100, 'all 100 increments counted')
    t.same(await readdir(home), ['auth.json'], 'lock released')
  })

  await t.test('real keyring: a Secret Service started by this test (dbus-daemon + gnome-keyring)', { skip: keyringSkip }, async (t) => {
    const docs = [chatgptDoc(), apiKeyDoc()]
    const homeA = join(dir, 'homeA')
    const homeB = join(dir, 'homeB')
    const homeC = join(dir, 'homeC')
    const runSteps = async (worker: Worker, steps: Step[]): Promise<StepResult[]> => {
      const results = (await worker.request('steps', { docs, steps })).results as StepResult[]
      t.equal(results.length, steps.length, `${worker.name}: every step reported`)
      return results
    }

    // Saved by one process, read by another: the secret really is in the keyring daemon.
    t.same(await runSteps(workers[0], [{ op: 'save', mode: 'keyring', home: homeA, doc: 0 }]), [{ ok: true }], 'keyring save')
    // The second process reads what the first saved, then clears; the files are checked between its steps.
    const reads: Step[] = [
      { op: 'load', mode: 'keyring', home: homeA, doc: 0 },
      { op: 'raw', home: homeA, doc: 0 },
      { op: 'load', mode: 'keyring', home: homeB, doc: null },
      { op: 'save', mode: 'auto', home: homeC, doc: 1 },
      { op: 'load', mode: 'auto', home: homeC, doc: 1 },
    ]
    const clears: Step[] = [
      { op: 'clear', mode: 'keyring', home: homeA },
      { op: 'load', mode: 'keyring', home: homeA, doc: null },
      { op: 'raw', home: homeA, doc: null },
      { op: 'clear', mode: 'keyring', home: homeA },
      { op: 'clear', mode: 'auto', home: homeC },
      { op: 'load', mode: 'auto', home: homeC, doc: null },
    ]
    const results = await runSteps(workers[1], [...reads, { op: 'files', homes: [homeA, homeB, homeC] }, ...clears])
    t.same(
      results.slice(0, reads.length),
      Array(5).fill({ ok: true }),
      'loaded in a new process; entry under app-server auth/home-<hash>; other home empty; auto uses the keyring',
    )
    t.same(results[reads.length], { ok: true, files: [] }, 'no auth.json in any home after the saves')
    t.same(results.slice(reads.length + 1), Array(6).fill({ ok: true }), 'cleared (twice without error), in both modes')
  })

  for (const w of workers) w.process.child.stdin!.end()
  for (const w of workers) {
    t.equal((await w.process.exited).code, 0, `${w.name} exited 0`)
    t.equal(w.process.stderr(), '', `${w.name} printed no error`)
  }
})
