/**
 * The durable remote-control enrollment: `$home/app-server.sqlite`, table
 * `remote_control_enrollments`, one row per `(websocket_url, account_id, app_server_client_name)`.
 *
 * The server token is memory-only: there is no column a token, its expiry or a subscribe cursor
 * could be written to, and `upsert` copies the `Enrollment` fields it knows by name, so an
 * object that happens to carry a token (a grant spread into an enrollment) still stores none.
 * After a restart the first connect refreshes the token before opening the socket.
 *
 * better-sqlite3 is synchronous: each call is a few microseconds on a tiny local table, which
 * is cheaper than a worker round trip and keeps the store free of interleaving concerns.
 */
import Database from 'better-sqlite3'
import { isNativeModuleFailure, NATIVE_MODULE_CODE, NATIVE_MODULE_MISSING } from './native-module.js'
import { chmodSync, closeSync, fstatSync, mkdirSync, openSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Enrollment } from './types.js'
import { errorCode } from '../util/error-code.js'
import { fsReason } from '../util/fs-reason.js'

export const ENROLLMENT_DB_FILE = 'app-server.sqlite'

/** What identifies one enrollment: the backend, the ChatGPT account, and this client. */
export type EnrollmentKey = Pick<Enrollment, 'websocketUrl' | 'accountId' | 'appServerClientName'>

/** The store could not be opened, migrated, read or written. Never carries row content. */
export class EnrollmentStoreError extends Error {
  override name = 'EnrollmentStoreError'
  constructor(
    message: string,
    /** SQLite's or the OS's error code (`SQLITE_NOTADB`, `EACCES`, ...), when there was one. */
    readonly code: string | undefined,
  ) {
    super(message)
  }
}

/**
 * Migration `i` takes the schema from `user_version` i to i + 1. Append only: a released
 * migration is never edited, because databases already past it would not see the change.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the enrollment table. STRICT makes SQLite reject a value of the wrong type instead of
  // storing it. No token, expiry or cursor columns.
  `CREATE TABLE remote_control_enrollments (
     websocket_url          TEXT    NOT NULL,
     account_id             TEXT    NOT NULL,
     app_server_client_name TEXT    NOT NULL,
     server_id              TEXT    NOT NULL,
     environment_id         TEXT    NOT NULL,
     server_name            TEXT    NOT NULL,
     updated_at             TEXT    NOT NULL,
     enabled                INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
     PRIMARY KEY (websocket_url, account_id, app_server_client_name)
   ) STRICT`,
  // 2: `enabled` goes: nothing ever stored false, and whether remote control runs is decided
  // per process, not by the row.
  `ALTER TABLE remote_control_enrollments DROP COLUMN enabled`,
]

export const SCHEMA_VERSION = MIGRATIONS.length

interface Row {
  websocket_url: string
  account_id: string
  app_server_client_name: string
  server_id: string
  environment_id: string
  server_name: string
  updated_at: string
}

interface KeyParams {
  websocket_url: string
  account_id: string
  app_server_client_name: string
}

type Statement<P extends object, R = unknown> = Database.Statement<[P], R>

export class EnrollmentStore {
  // Compiled once at open: each call only binds and steps.
  private readonly selectStmt: Statement<KeyParams, Row>
  private readonly upsertStmt: Statement<Row>
  private readonly deleteStmt: Statement<KeyParams>

  private constructor(
    private readonly db: Database.Database,
    /** The database file, for error messages (a path is not a secret). */
    readonly path: string,
  ) {
    this.selectStmt = db.prepare<KeyParams, Row>(
      `SELECT websocket_url, account_id, app_server_client_name, server_id, environment_id, server_name, updated_at
         FROM remote_control_enrollments
        WHERE websocket_url = @websocket_url AND account_id = @account_id AND app_server_client_name = @app_server_client_name`,
    )
    this.upsertStmt = db.prepare<Row>(
      `INSERT INTO remote_control_enrollments
         (websocket_url, account_id, app_server_client_name, server_id, environment_id, server_name, updated_at)
       VALUES (@websocket_url, @account_id, @app_server_client_name, @server_id, @environment_id, @server_name, @updated_at)
       ON CONFLICT (websocket_url, account_id, app_server_client_name) DO UPDATE SET
         server_id = excluded.server_id,
         environment_id = excluded.environment_id,
         server_name = excluded.server_name,
         updated_at = excluded.updated_at`,
    )
    this.deleteStmt = db.prepare<KeyParams>(
      `DELETE FROM remote_control_enrollments
        WHERE websocket_url = @websocket_url AND account_id = @account_id AND app_server_client_name = @app_server_client_name`,
    )
  }

  /**
   * Opens (creating if needed) `$home/app-server.sqlite` and brings its schema to
   * `SCHEMA_VERSION`. The directory is created 0700 and the file 0600: the rows are not
   * secrets, but they say which account this machine serves.
   */
  static open(home: string): EnrollmentStore {
    const dir = resolve(home)
    const path = join(dir, ENROLLMENT_DB_FILE)
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 })
    } catch (err) {
      throw new EnrollmentStoreError(`cannot create directory ${dir} for the remote control enrollment store: ${errorCode(err) ?? 'unknown error'}`, errorCode(err))
    }
    ensurePrivateFile(path)

    let db: Database.Database | undefined
    try {
      // fileMustExist: the file was just created 0600 above; SQLite creating one itself
      // (had it vanished in between) would use the umask's mode instead.
      db = new Database(path, { fileMustExist: true, timeout: 5_000 })
      // The default rollback journal: one file at rest, and the -journal file SQLite makes
      // during a write takes the database file's mode, so nothing is ever world-readable.
      migrate(db, path)
      checkIntegrity(db, path)
      return new EnrollmentStore(db, path)
    } catch (err) {
      db?.close()
      throw asStoreError(err, path, 'open')
    }
  }

  get(key: EnrollmentKey): Enrollment | null {
    const row = this.run('read', () => this.selectStmt.get(keyParams(key)))
    return row === undefined ? null : toEnrollment(row, this.path)
  }

  /** Inserts or replaces the row for the enrollment's key. */
  upsert(enrollment: Enrollment): void {
    const updatedAt = enrollment.updatedAt.getTime()
    if (!Number.isFinite(updatedAt)) throw new EnrollmentStoreError('cannot store a remote control enrollment: updatedAt is not a valid date', undefined)
    // Field by field, never a spread: only these columns exist, and nothing else is bound.
    const row: Row = {
      ...keyParams(enrollment),
      server_id: enrollment.serverId,
      environment_id: enrollment.environmentId,
      server_name: enrollment.serverName,
      updated_at: new Date(updatedAt).toISOString(),
    }
    this.run('write', () => this.upsertStmt.run(row))
  }

  /** Removes the row (a refresh answered 404). True when there was one. */
  delete(key: EnrollmentKey): boolean {
    return this.run('write', () => this.deleteStmt.run(keyParams(key))).changes > 0
  }

  /** Closes the connection; later calls fail. Closing twice is harmless. */
  close(): void {
    if (this.db.open) this.db.close()
  }

  /** Runs one statement, turning SQLite's failures (a page corrupted later, a full disk) into store errors. */
  private run<T>(what: 'read' | 'write', fn: () => T): T {
    try {
      return fn()
    } catch (err) {
      throw asStoreError(err, this.path, what)
    }
  }
}

/**
 * Creates the database file 0600 if absent, and tightens a file someone loosened. SQLite gives
 * its -journal/-wal/-shm files the database file's mode, so this covers them too.
 */
function ensurePrivateFile(path: string): void {
  let fd: number
  try {
    fd = openSync(path, 'a', 0o600)
  } catch (err) {
    throw asStoreError(err, path, 'open')
  }
  try {
    const info = fstatSync(fd)
    if (!info.isFile()) throw new EnrollmentStoreError(`remote control enrollment store ${path} is not a regular file`, undefined)
    if ((info.mode & 0o077) !== 0) chmodSync(path, 0o600)
  } catch (err) {
    throw asStoreError(err, path, 'open')
  } finally {
    closeSync(fd)
  }
}

/**
 * Applies the migrations the file has not seen, each in its own IMMEDIATE transaction together
 * with the `user_version` bump: a crash leaves the schema at a known version, and of two
 * processes opening a fresh file at once the second waits, re-reads the version, and skips.
 */
function migrate(db: Database.Database, path: string): void {
  const version = (): number => db.pragma('user_version', { simple: true }) as number
  const found = version()
  if (found > SCHEMA_VERSION) {
    throw new EnrollmentStoreError(
      `remote control enrollment store ${path} has schema version ${found}, newer than this app-server supports (${SCHEMA_VERSION}); upgrade app-server`,
      undefined,
    )
  }
  for (let target = found + 1; target <= SCHEMA_VERSION; target++) {
    db.transaction(() => {
      if (version() >= target) return // another process applied it while this one waited
      db.exec(MIGRATIONS[target - 1]!)
      db.pragma(`user_version = ${target}`)
    }).immediate()
  }
}

/** Reads every page once, so a damaged file fails at open with a clear error, not mid-session. */
function checkIntegrity(db: Database.Database, path: string): void {
  const result = db.pragma('quick_check', { simple: true })
  if (result !== 'ok') throw new EnrollmentStoreError(`remote control enrollment store ${path} is corrupt; move it aside to start over`, 'SQLITE_CORRUPT')
}

function keyParams(key: EnrollmentKey): KeyParams {
  return { websocket_url: key.websocketUrl, account_id: key.accountId, app_server_client_name: key.appServerClientName }
}

function toEnrollment(row: Row, path: string): Enrollment {
  const updatedAt = new Date(row.updated_at)
  if (Number.isNaN(updatedAt.getTime())) throw new EnrollmentStoreError(`remote control enrollment store ${path} holds a row whose updated_at is not a date`, undefined)
  return {
    websocketUrl: row.websocket_url,
    accountId: row.account_id,
    appServerClientName: row.app_server_client_name,
    serverId: row.server_id,
    environmentId: row.environment_id,
    serverName: row.server_name,
    updatedAt,
  }
}

/**
 * An error naming the file and the failure code only. SQLite's own messages do not echo bound
 * values, but a fixed text per code keeps that a guarantee rather than an observation.
 */
function asStoreError(err: unknown, path: string, what: 'open' | 'read' | 'write'): EnrollmentStoreError {
  if (err instanceof EnrollmentStoreError) return err
  if (isNativeModuleFailure(err)) return new EnrollmentStoreError(NATIVE_MODULE_MISSING, NATIVE_MODULE_CODE)
  const code = errorCode(err)
  return new EnrollmentStoreError(`cannot ${what} remote control enrollment store ${path}: ${enrollmentStoreReason(code)} (${code ?? 'no code'})`, code)
}

/**
 * What an enrollment store failure means, from SQLite's or the OS's code, in words that name
 * no path (clients see them: `remoteControl/enable` when set-up failed).
 */
export function enrollmentStoreReason(code: string | undefined): string {
  // An errno code (the file or directory, before SQLite opened it) in the words every file error
  // uses (fs-reason.ts); SQLite's own codes in words about the database.
  if (code !== undefined && !code.startsWith('SQLITE_')) return fsReason({ code })
  // Extended codes (`SQLITE_IOERR_SHORT_READ`) are judged by their primary code.
  switch (code?.split('_').slice(0, 2).join('_')) {
    case 'SQLITE_NOTADB':
    case 'SQLITE_CORRUPT':
      return 'the file is corrupt or not a SQLite database; move it aside to start over'
    case 'SQLITE_CANTOPEN':
    case 'SQLITE_PERM':
    case 'SQLITE_READONLY':
      return 'the file cannot be opened for reading and writing'
    case 'SQLITE_BUSY':
    case 'SQLITE_LOCKED':
      return 'the database stayed locked by another process'
    case 'SQLITE_FULL':
      return fsReason({ code: 'ENOSPC' })
    default:
      return 'unexpected database error'
  }
}
