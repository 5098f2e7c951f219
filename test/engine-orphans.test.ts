/**
 * No orphan engines: a gateway killed with SIGKILL leaves its engine running; the next gateway
 * on the same home finds it by the pid file, checks `/proc/<pid>/cmdline` really is its own
 * engine, and stops it before starting its own. Everything here runs real processes: stand-ins
 * whose command line is (or is almost) an engine's, `sleep`, and at the end the built gateway
 * and the real `codex app-server`.
 *
 * What must never happen is checked by how a process ends: a stand-in that dies of SIGTERM
 * was signalled by the code under test; one the test itself kills (SIGKILL) was left alone.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { resolveEngineBinary } from '../src/engine/binary.js'
import { isOurEngine, POLL_MS, stopOrphanEngine } from '../src/engine/orphan.js'
import { MAX_PID_FILE_BYTES, PID_FILE_NAME, readPidFile, writePidFile } from '../src/engine/pid-file.js'
import { EngineSupervisor } from '../src/engine/supervisor.js'
import { createLogger } from '../src/log/logger.js'
import { httpGet } from './helpers/client.js'
import { WaitableLogs, writeFakeEngine } from './helpers/engine-kit.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { cliEnv, MAIN, runProcess, spawnProcess, type Spawned } from './helpers/process.js'
import { tempDir } from './helpers/temp-dir.js'
import { until, withTimeout } from './helpers/wait.js'

type Test = import('tap').Test

// The engine and the shells it runs inherit HOME: a throwaway one keeps them out of the
// developer's home and away from a login profile that may be slow.
process.env.HOME = tempDir('engine-orphans-user-home')

const installed = resolveEngineBinary()
const absent = installed.ok ? null : `the codex engine is not installed here (${installed.reason})`
if (absent !== null && process.env.CI) t.fail(`real-engine tests cannot run under CI: ${absent}`)

const GRACE_MS = 5_000

interface Setup {
  readonly dir: string
  readonly pidFile: string
  readonly socketPath: string
  readonly logs: WaitableLogs
  readonly clock: ManualClock
  /** `stopOrphanEngine` with this setup. */
  check(procDir?: string): Promise<void> | null
  events(): unknown[]
}

function setup(t: Test): Setup {
  const dir = tempDir('engine-orphans', t)
  const logs = new WaitableLogs()
  const clock = new ManualClock()
  const pidFile = join(dir, PID_FILE_NAME)
  const socketPath = join(dir, 'codex.sock')
  const log = createLogger('debug', logs)
  return {
    dir,
    pidFile,
    socketPath,
    logs,
    clock,
    check: (procDir) => stopOrphanEngine({ pidFile, socketPath, log, timers: clock, graceMs: GRACE_MS, procDir }),
    events: () => logs.lines.map((l) => l.event).filter((e) => e !== undefined),
  }
}

/**
 * A shell whose command line is `sh -c … <args>`: with `app-server --listen unix://<socket>`
 * as its arguments it looks to `/proc` like an engine on that socket. A shell, not node: a
 * node start costs tens of times the CPU, and there are many of these. It prints `up` once its
 * trap is in place; with `ignoreTerm` it survives SIGTERM and prints `got SIGTERM` (a trapped
 * signal ends the shell's `wait` at once). Its `sleep` holds none of its pipes, so the pipes
 * close, and `exited` resolves, as soon as the shell ends.
 */
async function shell(t: Test, args: readonly string[], ignoreTerm = false): Promise<Spawned> {
  const script = `${ignoreTerm ? "trap 'echo got SIGTERM' TERM; " : ''}echo up; while :; do sleep 1 >/dev/null 2>&1 & wait $!; done`
  const p = spawnProcess('/bin/sh', ['-c', script, ...args], { timeoutMs: null })
  t.teardown(() => p.kill())
  await withTimeout(p.waitFor('stdout', /up\n/), 15_000, 'the stand-in to start')
  return p
}

/** An engine on `socketPath` to `/proc`: `sh -c … app-server --listen unix://<socket>`. */
function standIn(t: Test, socketPath: string, ignoreTerm = false): Promise<Spawned> {
  return shell(t, ['app-server', '--listen', `unix://${socketPath}`], ignoreTerm)
}

async function sleeper(t: Test): Promise<Spawned> {
  const p = spawnProcess('sleep', ['1000'], { timeoutMs: null })
  t.teardown(() => p.kill())
  await until(() => p.child.pid !== undefined && readFileSync(`/proc/${p.child.pid}/cmdline`, 'utf8').startsWith('sleep'), 'sleep to exec')
  return p
}

/** Kills `p` (SIGKILL) and says whether that is what ended it, i.e. nothing had signalled it before. */
async function aliveUntilWeKill(p: Spawned): Promise<boolean> {
  await settle()
  p.kill()
  return (await p.exited).signal === 'SIGKILL'
}

const gone = (path: string): boolean => {
  try {
    lstatSync(path)
    return false
  } catch {
    return true
  }
}

t.test('the pid file', async (t) => {
  t.test('written atomically, 0600, read back; absent when there is none', async (t) => {
    const s = setup(t)
    t.same(readPidFile(s.pidFile), { kind: 'absent' })
    writePidFile(s.pidFile, 4242)
    t.equal(readFileSync(s.pidFile, 'utf8'), '4242\n')
    t.equal(lstatSync(s.pidFile).mode & 0o777, 0o600, 'mode 0600')
    writePidFile(s.pidFile, 4343)
    t.same(readPidFile(s.pidFile), { kind: 'pid', pid: 4343 }, 'replaced')
    t.same(readdirSync(s.dir), [PID_FILE_NAME], 'no temp file left behind')
    t.equal(s.check(), null, 'a pid that is no process: nothing to wait for')
    t.ok(gone(s.pidFile), 'and the stale file is removed')
    t.same(s.events(), ['engine.pid_file_stale'])
  })

  t.test('hostile or malformed content is ignored and removed, never acted on', async (t) => {
    const s = setup(t)
    // A real process that would be stopped if the file were believed.
    const victim = await standIn(t, s.socketPath)
    const pid = victim.child.pid!
    t.ok(isOurEngine('/proc', pid, s.socketPath), 'the victim looks like our engine')
    const target = join(s.dir, 'elsewhere')
    writeFileSync(target, `${pid}\n`)
    const cases: [string, () => void, string][] = [
      ['a symbolic link to a good pid file', () => symlinkSync(target, s.pidFile), 'a symbolic link'],
      ['a directory', () => mkdirSync(s.pidFile), 'not a regular file'],
      ['too large (a good pid, then padding)', () => writeFileSync(s.pidFile, `${pid}\n`.padEnd(MAX_PID_FILE_BYTES + 1, ' ')), 'too large'],
      ['huge', () => writeFileSync(s.pidFile, Buffer.alloc(1 << 20, '7')), 'too large'],
      ['empty', () => writeFileSync(s.pidFile, ''), 'not a pid'],
      ['zero', () => writeFileSync(s.pidFile, '0\n'), 'not a pid'],
      ['negative', () => writeFileSync(s.pidFile, `-${pid}\n`), 'not a pid'],
      ['not numeric', () => writeFileSync(s.pidFile, 'engine\n'), 'not a pid'],
      ['a leading zero', () => writeFileSync(s.pidFile, `0${pid}\n`), 'not a pid'],
      ['spaces around it', () => writeFileSync(s.pidFile, ` ${pid} \n`), 'not a pid'],
      ['two pids', () => writeFileSync(s.pidFile, `${pid}\n${pid}\n`), 'not a pid'],
      ['a fraction', () => writeFileSync(s.pidFile, `${pid}.0\n`), 'not a pid'],
      ['beyond the largest pid', () => writeFileSync(s.pidFile, '4194305\n'), 'not a pid'],
      ['pid 1', () => writeFileSync(s.pidFile, '1\n'), 'not a pid'],
      ["the gateway's own pid", () => writeFileSync(s.pidFile, `${process.pid}\n`), "this gateway's own pid"],
    ]
    for (const [name, plant, why] of cases) {
      plant()
      t.same(readPidFile(s.pidFile), { kind: 'ignored', why }, name)
      t.equal(s.check(), null, `${name}: nothing to wait for`)
      t.ok(gone(s.pidFile), `${name}: removed`)
    }
    // A FIFO: opening it must not wait for a writer.
    const fifo = await runProcess('mkfifo', [s.pidFile])
    t.equal(fifo.code, 0)
    t.same(readPidFile(s.pidFile), { kind: 'ignored', why: 'not a regular file' }, 'a FIFO')
    t.equal(s.check(), null)
    t.ok(gone(s.pidFile), 'the FIFO is removed')
    t.equal(readFileSync(target, 'utf8'), `${pid}\n`, "a link's target is left as it was")

    const ignored = s.logs.lines.filter((l) => l.event === 'engine.pid_file_ignored')
    t.equal(ignored.length, cases.length + 1, 'each one logged')
    t.notOk(s.events().includes('engine.orphan'), 'nothing was stopped')
    t.equal(s.clock.pendingCount, 0, 'nothing waits')
    t.notOk(s.logs.text().includes(s.dir), 'no path in the log')
    t.ok(await aliveUntilWeKill(victim), 'the process the files named was never signalled')
  })

  t.test('a pid file this user does not own is ignored', { skip: process.getuid?.() === 0 ? false : 'needs root to make a file owned by another user' }, async (t) => {
    const s = setup(t)
    const victim = await standIn(t, s.socketPath)
    writeFileSync(s.pidFile, `${victim.child.pid}\n`)
    chownSync(s.pidFile, 65534, 65534)
    t.same(readPidFile(s.pidFile), { kind: 'ignored', why: 'not owned by this user' })
    t.equal(s.check(), null)
    t.ok(gone(s.pidFile))
    t.ok(await aliveUntilWeKill(victim))
  })
})

t.test('only a process whose command line is this gateway’s engine is touched', async (t) => {
  t.test('an unrelated process with the pid (sleep) is left alone; the file is stale', async (t) => {
    const s = setup(t)
    const sleep = await sleeper(t)
    writePidFile(s.pidFile, sleep.child.pid!)
    t.equal(s.check(), null)
    t.ok(gone(s.pidFile), 'removed')
    t.match(s.logs.lines.find((l) => l.event === 'engine.pid_file_stale'), { level: 30, pid: sleep.child.pid })
    t.equal(s.clock.pendingCount, 0)
    t.ok(await aliveUntilWeKill(sleep), 'sleep was never signalled')
  })

  t.test("the engine of another gateway home (another socket) is left alone", async (t) => {
    const s = setup(t)
    const other = await standIn(t, join(tempDir('engine-orphans-other', t), 'codex.sock'))
    writePidFile(s.pidFile, other.child.pid!)
    t.notOk(isOurEngine('/proc', other.child.pid!, s.socketPath))
    t.equal(s.check(), null)
    t.ok(gone(s.pidFile))
    t.same(s.events(), ['engine.pid_file_stale'])
    t.ok(await aliveUntilWeKill(other), 'the other engine was never signalled')
  })

  t.test('a process with our socket but without app-server is left alone', async (t) => {
    const s = setup(t)
    const p = await shell(t, ['serve', '--listen', `unix://${s.socketPath}`])
    writePidFile(s.pidFile, p.child.pid!)
    t.equal(s.check(), null)
    t.ok(await aliveUntilWeKill(p))
  })

  t.test('without /proc nothing is checked and nothing is signalled', async (t) => {
    const s = setup(t)
    const engine = await standIn(t, s.socketPath)
    writePidFile(s.pidFile, engine.child.pid!)
    t.equal(s.check(tempDir('engine-orphans-no-proc', t)), null)
    t.ok(gone(s.pidFile), 'removed')
    t.match(s.logs.lines.find((l) => l.event === 'engine.orphan_unchecked'), { level: 40, pid: engine.child.pid })
    t.ok(await aliveUntilWeKill(engine), 'never signalled')
  })

  t.test('our orphaned engine is sent SIGTERM and awaited', async (t) => {
    const s = setup(t)
    const orphan = await standIn(t, s.socketPath)
    const pid = orphan.child.pid!
    writePidFile(s.pidFile, pid)
    const stopped = s.check()
    t.not(stopped, null, 'there is something to wait for')
    t.equal((await orphan.exited).signal, 'SIGTERM', 'stopped with SIGTERM')
    t.notOk(isOurEngine('/proc', pid, s.socketPath), 'gone')
    await s.clock.advanceSettling(POLL_MS)
    await withTimeout(stopped!, 5_000, 'the orphan check to finish')
    t.match(s.logs.lines.find((l) => l.event === 'engine.orphan_stopped'), { level: 30, pid, killed: false })
    t.ok(gone(s.pidFile), 'the pid file is removed')
    t.same(s.events(), ['engine.orphan', 'engine.orphan_stopped'])
  })

  t.test('one that ignores SIGTERM gets SIGKILL after the grace', async (t) => {
    const s = setup(t)
    const orphan = await standIn(t, s.socketPath, true)
    const pid = orphan.child.pid!
    writePidFile(s.pidFile, pid)
    const stopped = s.check()!
    await orphan.waitFor('stdout', /got SIGTERM/)
    await s.clock.advanceSettling(GRACE_MS - POLL_MS)
    t.notOk(s.events().includes('engine.orphan_kill'), 'not before the grace is over')
    t.ok(isOurEngine('/proc', pid, s.socketPath), 'still running')
    await s.clock.advanceSettling(POLL_MS)
    t.match(s.logs.lines.find((l) => l.event === 'engine.orphan_kill'), { level: 40, pid, graceMs: GRACE_MS })
    t.equal((await orphan.exited).signal, 'SIGKILL')
    await s.clock.advanceSettling(POLL_MS)
    await withTimeout(stopped, 5_000, 'the orphan check to finish')
    t.match(s.logs.lines.find((l) => l.event === 'engine.orphan_stopped'), { pid, killed: true })
    t.ok(gone(s.pidFile))
  })
})

interface SupervisedOrphan {
  readonly supervisor: EngineSupervisor
  readonly logs: WaitableLogs
  readonly clock: ManualClock
  /** An earlier gateway's engine on this supervisor's socket, named by the pid file; it ignores SIGTERM. */
  readonly orphan: Spawned
}

/** A supervisor (stand-in engine binary, manual clock) whose home already holds an orphan. */
async function supervisorWithOrphan(t: Test): Promise<SupervisedOrphan> {
  const logs = new WaitableLogs()
  const clock = new ManualClock()
  const supervisor = new EngineSupervisor({
    binary: { path: writeFakeEngine(tempDir('engine-orphans-bin', t)), version: null },
    gatewayHome: tempDir('engine-orphans-gateway', t),
    engineHome: tempDir('engine-orphans-codex-home', t),
    clientVersion: '0.1.0-test',
    log: createLogger('debug', logs),
    timers: clock,
    // Not this process's environment: the stand-in is a node script, and under tap NODE_OPTIONS
    // would load tap's hooks into it.
    env: { FAKE_ENGINE_MODE: 'idle' },
  })
  t.teardown(() => supervisor.stop())
  mkdirSync(supervisor.socketDir, { recursive: true, mode: 0o700 })
  chmodSync(supervisor.socketDir, 0o700)
  const orphan = await standIn(t, supervisor.socketPath, true)
  writePidFile(supervisor.pidFile, orphan.child.pid!)
  return { supervisor, logs, clock, orphan }
}

t.test('the supervisor writes the pid file, stops an orphan before spawning, removes the file on exit', async (t) => {
  const { supervisor, logs, clock, orphan } = await supervisorWithOrphan(t)
  void supervisor.start()
  t.equal(supervisor.status.state, 'starting')
  t.equal(supervisor.pid, null, 'nothing spawned while the orphan runs')
  void supervisor.start() // a second start while the orphan is stopped must not spawn twice
  await orphan.waitFor('stdout', /got SIGTERM/)
  await clock.advanceSettling(GRACE_MS)
  t.equal((await orphan.exited).signal, 'SIGKILL', 'the orphan is killed after the grace')
  await clock.advanceSettling(POLL_MS)
  await logs.waitFor((l) => l.event === 'engine.spawn')
  t.equal(logs.lines.filter((l) => l.event === 'engine.spawn').length, 1, 'one engine spawned, after the orphan went')
  const pid = supervisor.pid!
  t.type(pid, 'number')
  t.equal(readFileSync(supervisor.pidFile, 'utf8'), `${pid}\n`, 'the new engine is in the pid file')
  t.equal(lstatSync(supervisor.pidFile).mode & 0o777, 0o600)
  t.ok(isOurEngine('/proc', pid, supervisor.socketPath), "its command line is this gateway's engine")

  const stopping = supervisor.stop()
  await clock.advanceSettling(GRACE_MS)
  await stopping
  t.ok(gone(supervisor.pidFile), 'removed once the engine has exited')
})

t.test('a stop while an orphan is being stopped: no engine is spawned afterwards', async (t) => {
  const { supervisor, logs, clock, orphan } = await supervisorWithOrphan(t)
  const started = supervisor.start()
  await orphan.waitFor('stdout', /got SIGTERM/)
  let stopDone = false
  const stopped = supervisor.stop().then(() => (stopDone = true))
  t.equal(supervisor.status.state, 'off')
  t.same(await started, { state: 'off', version: null, reason: null }, 'the start settles as off')
  await settle()
  t.notOk(stopDone, 'stop waits for the orphan')
  await clock.advanceSettling(GRACE_MS)
  await orphan.exited
  await clock.advanceSettling(POLL_MS)
  await stopped
  await settle()
  t.equal(supervisor.pid, null)
  t.notOk(logs.lines.some((l) => l.event === 'engine.spawn'), 'nothing spawned')
})

/** The engine pid a gateway home's pid file names. */
function pidFileOf(gatewayHome: string): number {
  return Number(readFileSync(join(gatewayHome, 'engine', PID_FILE_NAME), 'utf8'))
}

/** The parent pid from `/proc/<pid>/stat` (the field after the parenthesised command name). */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
}

t.test('a gateway killed with SIGKILL: the next one on the same home stops the orphaned real engine', { skip: absent ?? false }, async (t) => {
  const gatewayHome = tempDir('engine-orphans-e2e-home', t)
  const socketPath = join(gatewayHome, 'engine', 'codex.sock')
  const args = ['--listen', 'ws://127.0.0.1:0', '--login-callback-port', '0', '--home', gatewayHome, '--engine', 'on', '--engine-home', tempDir('engine-orphans-e2e-codex-home', t)]
  const env = { HOME: tempDir('engine-orphans-e2e-user-home', t) }
  const enginePids: number[] = []
  const gateways: Spawned[] = []
  // Whatever happens, no gateway and no engine outlives the test.
  t.teardown(async () => {
    for (const g of gateways) {
      g.kill()
      await g.exited
    }
    for (const pid of enginePids) if (isOurEngine('/proc', pid, socketPath)) process.kill(pid, 'SIGKILL')
  })
  // Waits on the gateway's log rather than `startCli`'s banner deadline: starting an engine
  // (twice here) on a loaded machine can take longer than a banner.
  const startGateway = async (): Promise<Spawned> => {
    const g = spawnProcess(process.execPath, [MAIN, ...args], { env: cliEnv(env), timeoutMs: null, record: ['stdout'] })
    gateways.push(g)
    await withTimeout(g.waitFor('stdout', /"event":"engine.ready"/), 60_000, 'the engine to be ready')
    return g
  }

  const first = await startGateway()
  const orphanPid = pidFileOf(gatewayHome)
  enginePids.push(orphanPid)
  t.ok(isOurEngine('/proc', orphanPid, socketPath), 'the pid file names the running engine')
  t.equal(parentOf(orphanPid), first.child.pid, 'a child of the first gateway')

  first.kill()
  t.equal((await first.exited).signal, 'SIGKILL')
  await settle()
  t.ok(isOurEngine('/proc', orphanPid, socketPath), 'the engine outlives its killed gateway')

  const second = await startGateway()
  t.match(second.stdout(), new RegExp(`"event":"engine.orphan_stopped","pid":${orphanPid}\\b`), 'the orphan was found and stopped')
  t.notOk(isOurEngine('/proc', orphanPid, socketPath), 'the orphaned engine is gone')
  const enginePid = pidFileOf(gatewayHome)
  enginePids.push(enginePid)
  t.not(enginePid, orphanPid)
  t.ok(isOurEngine('/proc', enginePid, socketPath), "the second gateway's own engine runs")
  t.equal(parentOf(enginePid), second.child.pid)
  const healthz = (await second.waitFor('stderr', /healthz: (\S+)/))[1]!
  const health = JSON.parse((await httpGet(healthz)).body) as { engine?: unknown }
  t.same(health.engine, { state: 'running', version: '0.169.0' })

  second.child.kill('SIGTERM')
  t.equal((await second.exited).code, 0, 'a clean shutdown')
  t.notOk(isOurEngine('/proc', enginePid, socketPath), 'its engine stopped with it')
  t.ok(gone(join(gatewayHome, 'engine', PID_FILE_NAME)), 'and the pid file went with it')
})
