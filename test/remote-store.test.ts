/**
 * Remote control's durable state over real things: a real SQLite file through better-sqlite3
 * (migrations, the 3-part key, modes, corrupt files), the raw bytes of that file scanned for
 * the server token a whole session handled, and `installation_id` created by two real
 * processes racing. Every secret is a canary; every error and warning text is recorded.
 */
import t from 'tap'
import Database from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { chmod, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  ENROLLMENT_DB_FILE,
  EnrollmentStore,
  enrollmentStoreReason,
  EnrollmentStoreError,
  MIGRATIONS,
  SCHEMA_VERSION,
  type EnrollmentKey,
} from '../src/remote-control/enrollment-store.js'
import { INSTALLATION_ID_FILE, loadOrCreateInstallationId } from '../src/remote-control/installation-id.js'
import { isUuid } from '../src/util/uuid.js'
import type { Enrollment, ServerTokenGrant } from '../src/remote-control/types.js'
import { canary, leakedCanaries, record } from './helpers/canary.js'
import { runNode, spawnProcess } from './helpers/process.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test

const INSTALLATION_ID_MODULE = fileURLToPath(new URL('../src/remote-control/installation-id.js', import.meta.url))

// ---------------------------------------------------------------------------------------------
// Helpers

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777

const KEY: EnrollmentKey = {
  websocketUrl: 'wss://chatgpt.com/backend-api/wham/remote/control/server',
  accountId: 'acct-123',
  appServerClientName: 'app-server',
}

function enrollment(overrides: Partial<Enrollment> = {}): Enrollment {
  return {
    ...KEY,
    serverId: 'srv-0001',
    environmentId: 'env-0001',
    serverName: 'build-box',
    updatedAt: new Date('2025-01-02T03:04:05.678Z'),
    ...overrides,
  }
}

/** Opens a store, closed at teardown. */
function openStore(t: Test, home: string): EnrollmentStore {
  const store = EnrollmentStore.open(home)
  t.teardown(() => store.close())
  return store
}

/** A second, independent connection to look at the file the way any SQLite client would. */
function inspect<T>(path: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path, { readonly: true, fileMustExist: true })
  try {
    return fn(db)
  } finally {
    db.close()
  }
}

/** The EnrollmentStoreError `fn` throws (recorded for the leak check); fails the test otherwise. */
function storeError(t: Test, fn: () => unknown, what: string): EnrollmentStoreError | undefined {
  try {
    fn()
  } catch (err) {
    t.type(err, EnrollmentStoreError, `${what}: an EnrollmentStoreError`)
    const message = err instanceof Error ? err.message : String(err)
    record(message)
    record(String((err as Error).stack))
    t.same(leakedCanaries(message), [], `${what}: no secret in the message`)
    return err as EnrollmentStoreError
  }
  t.fail(`${what}: expected an EnrollmentStoreError`)
  return undefined
}

/** Every file SQLite keeps for the database: the main file and any journal, WAL or shm beside it. */
async function databaseBytes(home: string): Promise<{ files: string[]; bytes: Buffer }> {
  const names = (await readdir(home)).filter((n) => n.startsWith(ENROLLMENT_DB_FILE))
  const buffers = await Promise.all(names.map((n) => readFile(join(home, n))))
  return { files: names, bytes: Buffer.concat(buffers) }
}

/** Runs an ES module snippet in a fresh node process; stderr is recorded for the leak check. */
function runSnippet(source: string, args: readonly string[]) {
  return runNode(['--input-type=module', '-e', source, ...args], { record: ['stderr'] })
}

// ---------------------------------------------------------------------------------------------
// Migrations and schema

t.test('migrations: a fresh database is created at the latest version; re-opening is a no-op', async (t) => {
  const home = tempDir('remote-store-fresh', t)
  const path = join(home, ENROLLMENT_DB_FILE)
  t.ok(SCHEMA_VERSION >= 1 && SCHEMA_VERSION === MIGRATIONS.length, 'the version is the number of migrations')

  const store = EnrollmentStore.open(home)
  store.upsert(enrollment())
  store.close()
  store.close() // closing twice is harmless
  const schemaOf = (db: Database.Database) => db.prepare(`SELECT type, name, sql FROM sqlite_master ORDER BY name`).all()
  const first = inspect(path, (db) => ({ version: db.pragma('user_version', { simple: true }), schema: schemaOf(db) }))
  t.equal(first.version, SCHEMA_VERSION, 'user_version is the latest')
  t.ok(
    (first.schema as Array<{ name: string }>).some((r) => r.name === 'remote_control_enrollments'),
    'the enrollment table exists',
  )

  // Were a migration re-applied, CREATE TABLE would fail; were the data lost, get would miss.
  for (let i = 0; i < 3; i++) {
    const again = openStore(t, home)
    t.same(again.get(KEY), enrollment(), `re-open ${i + 1}: the row survives`)
    again.close()
  }
  const later = inspect(path, (db) => ({ version: db.pragma('user_version', { simple: true }), schema: schemaOf(db) }))
  t.same(later, first, 'version and schema unchanged by re-opening')
})

t.test('migrations: an existing database at version 0 without the table is migrated', async (t) => {
  const home = tempDir('remote-store-v0', t)
  const path = join(home, ENROLLMENT_DB_FILE)
  // Some other part of app-server (or an older build) made the file first.
  const db = new Database(path)
  db.exec(`CREATE TABLE unrelated (x INTEGER); INSERT INTO unrelated VALUES (42)`)
  t.equal(db.pragma('user_version', { simple: true }), 0, 'starts at version 0')
  db.close()

  const store = openStore(t, home)
  t.equal(store.get(KEY), null, 'the new table is empty')
  store.upsert(enrollment())
  t.same(store.get(KEY), enrollment(), 'and usable')
  store.close()
  inspect(path, (db) => {
    t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'now at the latest version')
    t.same(db.prepare(`SELECT x FROM unrelated`).all(), [{ x: 42 }], 'other tables are left alone')
  })
})

t.test('migrations: a database from a newer app-server is refused, untouched', async (t) => {
  const home = tempDir('remote-store-newer', t)
  const path = join(home, ENROLLMENT_DB_FILE)
  EnrollmentStore.open(home).close()
  const db = new Database(path)
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`)
  db.close()
  const before = await readFile(path)

  const err = storeError(t, () => EnrollmentStore.open(home), 'newer schema')
  t.match(err?.message, /schema version \d+, newer than this app-server supports/, 'says why')
  t.ok(before.equals(await readFile(path)), 'the file is not modified')
})

t.test('migrations: two connections opening a fresh file at once agree on one schema', async (t) => {
  const home = tempDir('remote-store-twice', t)
  const a = openStore(t, home)
  const b = openStore(t, home)
  a.upsert(enrollment({ serverId: 'from-a' }))
  t.equal(b.get(KEY)?.serverId, 'from-a', 'b sees what a wrote')
  b.upsert(enrollment({ serverId: 'from-b' }))
  t.equal(a.get(KEY)?.serverId, 'from-b', 'a sees what b wrote')
})

t.test('schema: exactly the enrollment columns, keyed by the 3 parts; no token, expiry or cursor', async (t) => {
  const home = tempDir('remote-store-schema', t)
  EnrollmentStore.open(home).close()
  const columns = inspect(join(home, ENROLLMENT_DB_FILE), (db) =>
    db.prepare(`PRAGMA table_info(remote_control_enrollments)`).all(),
  ) as Array<{ name: string; type: string; notnull: number; pk: number }>
  const names = columns.map((c) => c.name)
  t.same(
    [...names].sort(),
    ['account_id', 'app_server_client_name', 'environment_id', 'server_id', 'server_name', 'updated_at', 'websocket_url'],
    'the columns',
  )
  t.same(
    columns.filter((c) => c.pk > 0).sort((x, y) => x.pk - y.pk).map((c) => c.name),
    ['websocket_url', 'account_id', 'app_server_client_name'],
    'the primary key, in order',
  )
  t.same(names.filter((n) => /token|expir|cursor|secret|pairing/i.test(n)), [], 'nothing that could hold a token, expiry or cursor')
  t.ok(columns.every((c) => c.notnull === 1), 'every column is NOT NULL')
  // Only the one table: nothing else in the file could hold a token either.
  const tables = inspect(join(home, ENROLLMENT_DB_FILE), (db) =>
    db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all(),
  )
  t.same(tables, [{ name: 'remote_control_enrollments' }], 'one table')
})

// ---------------------------------------------------------------------------------------------
// CRUD

t.test('crud: get, upsert, update, delete by the 3-part key', async (t) => {
  const store = openStore(t, tempDir('remote-store-crud', t))
  t.equal(store.get(KEY), null, 'absent is null')
  t.equal(store.delete(KEY), false, 'deleting nothing is false')

  store.upsert(enrollment())
  t.same(store.get(KEY), enrollment(), 'round trip, updatedAt to the millisecond')

  const updated = enrollment({ serverId: 'srv-0002', environmentId: 'env-0002', serverName: 'renamed', updatedAt: new Date('2025-02-03T04:05:06.789Z') })
  store.upsert(updated)
  t.same(store.get(KEY), updated, 'upsert replaces every stored field')

  // Each key part on its own tells enrollments apart.
  const others: EnrollmentKey[] = [
    { ...KEY, websocketUrl: 'wss://chatgpt-staging.com/backend-api/wham/remote/control/server' },
    { ...KEY, accountId: 'acct-456' },
    { ...KEY, appServerClientName: 'other-client' },
  ]
  others.forEach((key, i) => store.upsert(enrollment({ ...key, serverId: `srv-other-${i}` })))
  others.forEach((key, i) => t.equal(store.get(key)?.serverId, `srv-other-${i}`, `key variant ${i} is its own row`))
  t.equal(store.get(KEY)?.serverId, 'srv-0002', 'the original row is untouched')

  t.equal(store.delete(KEY), true, 'delete reports the removed row')
  t.equal(store.get(KEY), null, 'gone')
  others.forEach((key, i) => t.ok(store.get(key), `key variant ${i} survives the delete`))

  // Keys are compared exactly: no case folding, no trimming.
  t.equal(store.get({ ...others[1]!, accountId: 'ACCT-456' }), null, 'account id is case-sensitive')
  t.equal(store.get({ ...others[2]!, appServerClientName: 'other-client ' }), null, 'no trimming')
})

t.test('migrations: a version-1 database keeps its rows when the enabled column goes', async (t) => {
  const home = tempDir('remote-store-v1', t)
  const path = join(home, ENROLLMENT_DB_FILE)
  // What an app-server with only the first migration left behind, a disabled row included.
  const db = new Database(path)
  db.exec(MIGRATIONS[0]!)
  db.pragma('user_version = 1')
  const insert = db.prepare(
    `INSERT INTO remote_control_enrollments VALUES (@websocket_url, @account_id, 'app-server', @server_id, 'env-old', 'old-box', '2025-01-02T03:04:05.678Z', @enabled)`,
  )
  insert.run({ websocket_url: KEY.websocketUrl, account_id: KEY.accountId, server_id: 'srv-on', enabled: 1 })
  insert.run({ websocket_url: KEY.websocketUrl, account_id: 'acct-off', server_id: 'srv-off', enabled: 0 })
  db.close()

  const store = openStore(t, home)
  const old = { serverName: 'old-box', environmentId: 'env-old', updatedAt: new Date('2025-01-02T03:04:05.678Z') }
  t.same(store.get(KEY), enrollment({ ...old, serverId: 'srv-on' }), 'an enabled row survives')
  t.same(store.get({ ...KEY, accountId: 'acct-off' }), enrollment({ ...old, accountId: 'acct-off', serverId: 'srv-off' }), 'so does a disabled one')
  store.upsert(enrollment())
  t.same(store.get(KEY), enrollment(), 'and the table is writable')
  store.close()
  inspect(path, (db) => {
    t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'now at the latest version')
    const columns = (db.prepare(`PRAGMA table_info(remote_control_enrollments)`).all() as Array<{ name: string }>).map((c) => c.name)
    t.notOk(columns.includes('enabled'), 'the column is gone')
    const raw = db.prepare(`SELECT updated_at, typeof(updated_at) AS t FROM remote_control_enrollments WHERE account_id = ?`).get(KEY.accountId)
    t.same(raw, { updated_at: '2025-01-02T03:04:05.678Z', t: 'text' }, 'updated_at stored as RFC 3339 text')
  })
})

t.test('crud: upsert stores only enrollment fields, even from an object carrying a token', async (t) => {
  const home = tempDir('remote-store-extra', t)
  const store = openStore(t, home)
  // A caller that spreads a grant into the enrollment by mistake: TypeScript allows the
  // extra properties, so the store itself must not write them.
  const token = canary('rc-token-extra')
  const grant: ServerTokenGrant = { serverId: 'srv-extra', environmentId: 'env-extra', remoteControlToken: token, expiresAt: new Date(Date.now() + 3_600_000) }
  const sloppy = { ...enrollment(), ...grant }
  store.upsert(sloppy)
  t.same(store.get(KEY), enrollment({ serverId: 'srv-extra', environmentId: 'env-extra' }), 'the enrollment fields round-trip')
  store.close()
  const { bytes } = await databaseBytes(home)
  t.same(leakedCanaries(bytes.toString('latin1')), [], 'the token is nowhere in the file')
  t.ok(bytes.includes('srv-extra'), 'while the server id is')
})

t.test('crud: an invalid updatedAt is refused', async (t) => {
  const store = openStore(t, tempDir('remote-store-baddate', t))
  storeError(t, () => store.upsert(enrollment({ updatedAt: new Date('not a date') })), 'invalid date')
  t.equal(store.get(KEY), null, 'nothing stored')
})

// ---------------------------------------------------------------------------------------------
// Files

t.test('files: home created 0700, database 0600; a loosened file is tightened', async (t) => {
  const home = join(tempDir('remote-store-modes', t), 'nested', 'home')
  const path = join(home, ENROLLMENT_DB_FILE)
  const store = EnrollmentStore.open(home)
  t.equal(await modeOf(home), 0o700, 'home is 0700')
  t.equal(await modeOf(path), 0o600, 'the database is 0600')
  for (let i = 0; i < 10; i++) store.upsert(enrollment({ serverId: `srv-${i}` }))
  const { files } = await databaseBytes(home)
  for (const name of files) t.equal(await modeOf(join(home, name)), 0o600, `${name} is 0600 while open`)
  store.close()

  await chmod(path, 0o644)
  const again = openStore(t, home)
  t.equal(await modeOf(path), 0o600, 'a 0644 file is back to 0600 on open')
  t.equal(again.get(KEY)?.serverId, 'srv-9', 'with its content')
})

t.test('files: a corrupt or unreadable database is a clear error without its content', async (t) => {
  const home = tempDir('remote-store-corrupt', t)
  const path = join(home, ENROLLMENT_DB_FILE)

  // Not a database at all, holding something secret-looking.
  const secret = canary('garbage')
  await writeFile(path, `${secret}\n`.repeat(200), { mode: 0o600 })
  let err = storeError(t, () => EnrollmentStore.open(home), 'garbage file')
  t.equal(err?.code, 'SQLITE_NOTADB', 'code SQLITE_NOTADB')
  t.match(err?.message, /corrupt or not a SQLite database/, 'says what is wrong')
  t.ok(err?.message.includes(path), 'names the file')
  t.ok((await readFile(path, 'utf8')).startsWith(secret), 'the file is left for the user to inspect')

  // A real database whose table pages were overwritten.
  await rm(path)
  const store = EnrollmentStore.open(home)
  for (let i = 0; i < 50; i++) store.upsert(enrollment({ ...KEY, accountId: `acct-${i}`, serverName: 'x'.repeat(200) }))
  store.close()
  const pageSize = inspect(path, (db) => db.pragma('page_size', { simple: true }) as number)
  const size = (await stat(path)).size
  t.ok(size >= pageSize * 3, 'the table spans several pages')
  const handle = await open(path, 'r+')
  await handle.write(Buffer.alloc(size - pageSize, 0xa5), 0, size - pageSize, pageSize)
  await handle.close()
  err = storeError(t, () => EnrollmentStore.open(home), 'damaged pages')
  t.match(err?.message, /corrupt/, 'damaged pages are reported as corruption at open')

  // Something that cannot be opened as a file.
  await rm(path)
  await mkdir(path)
  err = storeError(t, () => EnrollmentStore.open(home), 'a directory in the way')
  t.match(err?.message, /a directory is in the way|not a regular file/, 'says what is in the way')

  // A home that cannot be created (a file where the directory should be).
  const blocked = join(home, 'blocked')
  await writeFile(blocked, '')
  err = storeError(t, () => EnrollmentStore.open(join(blocked, 'home')), 'home not creatable')
  t.match(err?.message, /cannot create directory/, 'says the directory cannot be created')
})

// ---------------------------------------------------------------------------------------------
// The token is memory-only

t.test('full session: the server token never reaches the database file', async (t) => {
  const home = tempDir('remote-store-session', t)
  const store = openStore(t, home)
  const key = { ...KEY, accountId: 'acct-session' }
  const tokens: string[] = []
  // What the enrollment manager holds in memory beside the store.
  let memory: { grant: ServerTokenGrant; enrollment: Enrollment } | null = null

  for (let round = 0; round < 200; round++) {
    // Enroll at the start and after every simulated 404; otherwise refresh (same ids).
    const enroll = memory === null || round % 50 === 0
    const serverId = enroll ? `srv-session-${String(round).padStart(4, '0')}` : memory!.grant.serverId
    const environmentId = enroll ? `env-session-${round}` : memory!.grant.environmentId
    const token = canary('rc-token')
    tokens.push(token)
    const grant: ServerTokenGrant = { serverId, environmentId, remoteControlToken: token, expiresAt: new Date(Date.now() + 3_600_000) }
    const next: Enrollment = {
      ...key,
      serverId: grant.serverId,
      environmentId: grant.environmentId,
      serverName: 'session-box',
      updatedAt: new Date(),
    }
    if (enroll && memory !== null) t.equal(store.delete(key), true, `round ${round}: the 404 path deletes the row`)
    store.upsert(next)
    memory = { grant, enrollment: next }
    t.equal(store.get(key)?.serverId, serverId, `round ${round}: stored`)

    if (round % 40 === 0) {
      const { files, bytes } = await databaseBytes(home)
      t.same(leakedCanaries(bytes.toString('latin1')), [], `round ${round}: no token in ${files.join(', ')} while open`)
    }
  }
  t.equal(tokens.length, 200, 'the session handled 200 tokens')

  const open = await databaseBytes(home)
  store.close()
  const closed = await databaseBytes(home)
  for (const [when, { files, bytes }] of [['open', open], ['closed', closed]] as const) {
    const text = bytes.toString('latin1')
    t.same(leakedCanaries(text), [], `${when}: no token (raw, URL-encoded or base64) in ${files.join(', ')}`)
    t.notOk(tokens.some((tok) => text.includes(tok.slice('rc-token-'.length))), `${when}: not even the random part of a token`)
    // The scan reads real content: the latest server id and name are in the same bytes.
    t.ok(text.includes(memory!.grant.serverId), `${when}: the server id is found in the raw bytes`)
    t.ok(text.includes('session-box'), `${when}: the server name is found in the raw bytes`)
  }
})

// ---------------------------------------------------------------------------------------------
// installation_id

t.test('installation id: created once, 0600 in a 0700 home, stable across calls', async (t) => {
  const home = join(tempDir('remote-store-iid', t), 'nested', 'home')
  const path = join(home, INSTALLATION_ID_FILE)
  const warnings: string[] = []
  const warn = (m: string) => warnings.push(m)

  const id = await loadOrCreateInstallationId(home, { warn })
  t.ok(isUuid(id), 'a UUID')
  t.equal(id, id.toLowerCase(), 'lower case')
  t.equal(await readFile(path, 'utf8'), `${id}\n`, 'written to installation_id')
  t.equal(await modeOf(path), 0o600, 'the file is 0600')
  t.equal(await modeOf(home), 0o700, 'home is 0700')

  for (let i = 0; i < 3; i++) t.equal(await loadOrCreateInstallationId(home, { warn }), id, `call ${i + 2}: the same id`)
  const concurrent = await Promise.all(Array.from({ length: 10 }, () => loadOrCreateInstallationId(home, { warn })))
  t.same(new Set(concurrent), new Set([id]), 'concurrent calls: the same id')
  t.same(warnings, [], 'no warnings')
  t.same((await readdir(home)).sort(), [INSTALLATION_ID_FILE], 'no temp files left')

  // Concurrent first calls in one process agree too.
  const fresh = tempDir('remote-store-iid-fresh', t)
  const ids = await Promise.all(Array.from({ length: 10 }, () => loadOrCreateInstallationId(fresh, { warn })))
  t.equal(new Set(ids).size, 1, 'ten concurrent creators agree on one id')
  t.equal(await readFile(join(fresh, INSTALLATION_ID_FILE), 'utf8'), `${ids[0]}\n`, 'and it is the one on disk')
})

t.test('installation id: two processes racing to create it print the same id', async (t) => {
  // Two processes, each through five fresh homes in the same order, released together from a
  // barrier, so each home is created by two racers at once (five races for two node start-ups).
  const ROUNDS = 5
  const homes = Array.from({ length: ROUNDS }, (_, round) => tempDir(`remote-store-iid-race-${round}`, t))
  const source = `
    const { loadOrCreateInstallationId } = await import(${JSON.stringify(new URL(`file://${INSTALLATION_ID_MODULE}`).href)})
    const [when, ...homes] = process.argv.slice(1)
    if (when === 'on-go') {
      process.stdout.write('ready\\n')
      await new Promise((r) => process.stdin.once('data', r))
    }
    const ids = []
    for (const home of homes) ids.push(await loadOrCreateInstallationId(home))
    process.stdout.write(ids.map((id) => id + '\\n').join(''))
  `
  const racer = () => spawnProcess(process.execPath, ['--input-type=module', '-e', source, 'on-go', ...homes], { stdin: 'pipe', timeoutMs: 30_000, record: ['stderr'] })
  const a = racer()
  const b = racer()
  await Promise.all([a.waitFor('stdout', /ready\n/), b.waitFor('stdout', /ready\n/)])
  a.child.stdin!.end('go\n')
  b.child.stdin!.end('go\n')
  const [ea, eb] = await Promise.all([a.exited, b.exited])
  t.equal(ea.code, 0, 'process a exits 0')
  t.equal(eb.code, 0, 'process b exits 0')
  const idsOf = (out: string) => out.replace(/^ready\n/, '').split('\n').slice(0, ROUNDS)
  const aIds = idsOf(a.stdout())
  const bIds = idsOf(b.stdout())
  // A later reader (this process: no cache, it reads each file) gets the same ids.
  const cIds = await Promise.all(homes.map((home) => loadOrCreateInstallationId(home)))
  for (let round = 0; round < ROUNDS; round++) {
    t.ok(isUuid(aIds[round] ?? ''), `round ${round}: a printed a UUID`)
    t.equal(aIds[round], bIds[round], `round ${round}: both printed the same id`)
    t.equal(await readFile(join(homes[round]!, INSTALLATION_ID_FILE), 'utf8'), `${aIds[round]}\n`, `round ${round}: the id on disk`)
    t.equal(cIds[round], aIds[round], `round ${round}: a later reader gets the same id`)
  }
  t.equal(a.stderr() + b.stderr(), '', 'no warnings')
})

t.test('installation id: invalid content is replaced, and the warning says so without it', async (t) => {
  const cases: Array<[string, (secret: string) => string]> = [
    ['not a UUID', (s) => s],
    ['a UUID with junk after it', (s) => `123e4567-e89b-12d3-a456-426614174000${s}`],
    ['an empty file (a creator that crashed before writing)', () => ''],
    ['binary junk', (s) => `\u0000\u00ff${s}`],
  ]
  for (const [label, content] of cases) {
    const home = tempDir('remote-store-iid-bad', t)
    const path = join(home, INSTALLATION_ID_FILE)
    const secret = canary('iid-content')
    await writeFile(path, content(secret), { mode: 0o644 })
    const warnings: string[] = []
    const id = await loadOrCreateInstallationId(home, { warn: (m) => warnings.push(m) })
    warnings.forEach(record)
    t.ok(isUuid(id), `${label}: a new UUID`)
    t.equal(await readFile(path, 'utf8'), `${id}\n`, `${label}: written in place`)
    t.equal(await modeOf(path), 0o600, `${label}: the new file is 0600`)
    t.equal(warnings.length, 1, `${label}: one warning`)
    t.match(warnings[0], /did not hold a UUID; replaced it/, `${label}: the warning says what happened`)
    t.same(leakedCanaries(warnings.join('\n')), [], `${label}: the warning does not carry the old content`)
    t.equal(await loadOrCreateInstallationId(home, { warn: (m) => warnings.push(m) }), id, `${label}: stable afterwards`)
    t.equal(warnings.length, 1, `${label}: no further warning`)
    t.same(await readdir(home), [INSTALLATION_ID_FILE], `${label}: nothing left aside`)
  }

  // With no warn given, a process warning is emitted (in a child, to keep this process's clean).
  const home = tempDir('remote-store-iid-default-warn', t)
  await writeFile(join(home, INSTALLATION_ID_FILE), 'garbage')
  const child = await runSnippet(
    `const { loadOrCreateInstallationId } = await import(${JSON.stringify(new URL(`file://${INSTALLATION_ID_MODULE}`).href)})
     process.stdout.write(await loadOrCreateInstallationId(process.argv[1]))`,
    [home],
  )
  t.ok(isUuid(child.stdout), 'default warn: a new UUID')
  t.match(child.stderr, /InstallationIdWarning: .*did not hold a UUID/, 'default warn: a process warning on stderr')
})

t.test('installation id: a valid id is kept as is; whitespace and case do not count as invalid', async (t) => {
  const home = tempDir('remote-store-iid-keep', t)
  const path = join(home, INSTALLATION_ID_FILE)
  await writeFile(path, '  123E4567-E89B-12D3-A456-426614174000 \r\n', { mode: 0o644 })
  const warnings: string[] = []
  t.equal(await loadOrCreateInstallationId(home, { warn: (m) => warnings.push(m) }), '123e4567-e89b-12d3-a456-426614174000', 'normalized to lower case')
  t.same(warnings, [], 'no warning')
  t.equal(await readFile(path, 'utf8'), '  123E4567-E89B-12D3-A456-426614174000 \r\n', 'the file is not rewritten')
  t.equal(await modeOf(path), 0o600, 'but a loosened mode is tightened')
  t.ok(existsSync(path), 'still there')
})

t.test('enrollmentStoreReason: file errors in the words every file error uses, SQLite codes in words about the database', async (t) => {
  t.equal(enrollmentStoreReason('EROFS'), 'read-only file system')
  t.equal(enrollmentStoreReason('ENOSPC'), 'disk full')
  t.equal(enrollmentStoreReason('SQLITE_FULL'), 'disk full', "SQLite's full disk in the same words")
  t.equal(enrollmentStoreReason('EACCES'), 'permission denied')
  t.equal(enrollmentStoreReason('EISDIR'), 'a directory is in the way')
  t.equal(enrollmentStoreReason('SQLITE_CANTOPEN'), 'the file cannot be opened for reading and writing')
  t.match(enrollmentStoreReason('SQLITE_CORRUPT_VTAB'), /corrupt/, 'an extended code is judged by its primary code')
  t.equal(enrollmentStoreReason('SQLITE_BUSY_TIMEOUT'), 'the database stayed locked by another process')
  t.equal(enrollmentStoreReason('SQLITE_IOERR_SHORT_READ'), 'unexpected database error')
  t.equal(enrollmentStoreReason(undefined), 'unexpected database error')
  t.equal(enrollmentStoreReason('EWHATEVER'), 'error EWHATEVER', 'an unknown errno is shown as itself')
  t.equal(enrollmentStoreReason('not a code; rm -rf /'), 'unknown error', 'a code that is no code is not echoed')
})
