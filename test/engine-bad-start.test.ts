/**
 * Bad starts under the restart policy, with the real supervisor and stand-in binaries on a
 * manual clock: a binary that is missing, then not executable, then exits at once, then is
 * fixed — each failure logged with its cause and shown as `unavailable` with a reason that
 * holds no path, each retry later than the one before, and a working binary taken up by the
 * next retry without a restart of the gateway.
 */
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { EngineService, type EngineAccounts } from '../src/engine/service.js'
import { createLogger } from '../src/log/logger.js'
import { RequestIdAllocator } from '../src/rpc/server-requests.js'
import { WaitableLogs, writeFakeEngine } from './helpers/engine-kit.js'
import { ManualClock } from './helpers/manual-clock.js'
import { tempDir } from './helpers/temp-dir.js'
import { until } from './helpers/wait.js'

type Test = import('tap').Test

const ERROR = 50

const noAccount: EngineAccounts = {
  current: null,
  chatgptTokens: () => null,
  onCredentialChange: () => () => {},
  recoverAfterUnauthorized: () => Promise.reject(new Error('no account')),
}

/** An engine service for `--engine on --engine-bin <dir>/codex` on a manual clock with fixed jitter. */
function badStartRig(t: Test, label: string, options: { resolvedAtStart: boolean }) {
  const dir = tempDir(label, t)
  const binary = join(dir, 'codex')
  const clock = new ManualClock()
  const logs = new WaitableLogs()
  const engine = new EngineService({
    settings: { mode: 'on', binary, home: tempDir(`${label}-home`, t), configOverrides: [] },
    gatewayHome: tempDir(`${label}-gateway`, t),
    clientVersion: '0.1.0-test',
    accounts: noAccount,
    serverRequestIds: new RequestIdAllocator(),
    log: createLogger('debug', logs),
    clock,
    random: () => 0.5,
    // Resolved as if it had been there at start-up (it goes missing before the first spawn), or left to the real resolver.
    ...(options.resolvedAtStart ? { resolveBinary: () => ({ ok: true as const, binary: { path: binary, version: '0.169.0' } }) } : {}),
  })
  t.teardown(() => engine.stop())
  return { dir, binary, clock, logs, engine }
}

t.test('missing, not executable, exits at once, fixed: backed-off retries, each cause said', async (t) => {
  const { dir, binary, clock, logs, engine } = badStartRig(t, 'engine-bad-start', { resolvedAtStart: true })
  const scheduled = (): number[] => logs.lines.filter((l) => l.event === 'engine.restart_scheduled').map((l) => l.delayMs as number)
  const retry = async (n: number): Promise<void> => {
    clock.advance(scheduled()[n - 1]!)
    await until(() => scheduled().length > n, `failure ${n + 1}`)
  }

  engine.start()
  await until(() => scheduled().length === 1, 'the first failure')
  t.same(engine.status, { state: 'unavailable', version: '0.169.0', reason: 'engine binary not found' })
  t.match(logs.lines.find((l) => l.event === 'engine.spawn_failed'), { level: ERROR, cause: 'ENOENT' })
  t.same(clock.pendingDelays(), [200], 'nothing else is waiting: no storm')

  writeFileSync(binary, '#!/bin/sh\necho "Error: bad config" >&2\nexit 2\n')
  chmodSync(binary, 0o644)
  await retry(1)
  t.same(engine.status, { state: 'unavailable', version: '0.169.0', reason: 'engine binary is not executable' })
  t.match(logs.lines.filter((l) => l.event === 'engine.spawn_failed')[1], { level: ERROR, cause: 'EACCES' })

  chmodSync(binary, 0o755)
  await retry(2)
  t.same(engine.status, { state: 'unavailable', version: '0.169.0', reason: 'engine exited during start-up (code 2)' })
  t.match(logs.lines.find((l) => l.event === 'engine.exit'), { level: ERROR, code: 2, duringStartup: true })
  t.ok(logs.lines.some((l) => l.msg === 'Error: bad config' && l.level === ERROR), "the engine's own words, at error level")
  t.same(scheduled(), [200, 400, 800], 'each retry waits twice as long')

  // Fixed: a stand-in that starts and stays up (it never answers initialize, so it stays `starting`).
  writeFakeEngine(dir, 'codex')
  clock.advance(800)
  await logs.waitFor((l) => l.msg === 'fake engine: up')
  t.same(engine.status, { state: 'starting', version: '0.169.0', reason: 'engine exited during start-up (code 2)' }, 'the retry shows the last cause until it is up')
  t.notOk(JSON.stringify(engine.status).includes(dir), 'no path in any status')
  t.notOk(logs.lines.filter((l) => l.event === 'engine.restart_scheduled').some((l) => JSON.stringify(l).includes(dir)), 'nor in the restart log lines')
})

t.test('--engine on with an explicit binary missing at start-up: retried until it appears', async (t) => {
  const { dir, clock, logs, engine } = badStartRig(t, 'engine-late-binary', { resolvedAtStart: false })
  t.ok(engine.expected, 'an engine is expected')
  t.match(logs.lines.find((l) => l.event === 'engine.missing'), { level: ERROR }, 'said at once, at error level')
  engine.start()
  await until(() => logs.lines.some((l) => l.event === 'engine.restart_scheduled'), 'the first failure')
  t.same(engine.status, { state: 'unavailable', version: null, reason: 'engine binary not found' })
  writeFakeEngine(dir, 'codex')
  clock.advance(200)
  await logs.waitFor((l) => l.msg === 'fake engine: up')
  t.equal(engine.status.state, 'starting', 'the binary installed later is spawned by the next retry')
})
