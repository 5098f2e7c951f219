/**
 * The engine process, started and operated by its supervisor: binary resolution, the supervisor's
 * private unix socket, readiness by `initialize`, stderr as log lines, stop with SIGTERM then
 * SIGKILL, start-up failures as `unavailable` with a reason, and a whole turn against the real
 * `codex app-server` through the engine rpc client and a fake model.
 *
 * Real-engine tests skip (saying why) only when `@openai/codex` is not installed for this
 * platform. Paths the real engine cannot be made to take (ignoring SIGTERM, never listening)
 * use a node script as the binary, driven by timers the test advances.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { probeEngineVersion, resolveEngineBinary, type EngineBinary, type EngineBinaryResolution } from '../src/engine/binary.js'
import { EngineRpcClient } from '../src/engine/rpc-client.js'
import { EngineSupervisor, type EngineExit, type EngineStatus, type EngineSupervisorOptions } from '../src/engine/supervisor.js'
import { MAX_ENGINE_LINE_CHARS } from '../src/engine/output-log.js'
import { createLogger } from '../src/log/logger.js'
import { systemClock } from '../src/clock.js'
import { canary, leakedCanaries } from './helpers/canary.js'
import { WaitableLogs, writeFakeEngine } from './helpers/engine-kit.js'
import { ManualClock } from './helpers/manual-clock.js'
import { FakeModel } from './helpers/fake-model.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test
type Json = Record<string, any>

const INFO = 30
const WARN = 40
const ERROR = 50

// The engine and the shells it runs inherit HOME: a throwaway one keeps them out of the
// developer's home (codex writes under ~/.codex/tmp) and away from a login profile that may be slow.
process.env.HOME = tempDir('engine-process-user-home')

const installed = resolveEngineBinary()
const realEngineSkip = installed.ok ? false : `the codex engine is not installed here (${installed.reason})`
const realBinary: EngineBinary | null = installed.ok ? installed.binary : null

interface Harness {
  readonly supervisor: EngineSupervisor
  readonly logs: WaitableLogs
  readonly states: EngineStatus[]
  readonly exits: EngineExit[]
  readonly gatewayHome: string
}

function supervise(t: Test, binary: EngineBinary, extra: Partial<EngineSupervisorOptions> = {}): Harness {
  const logs = new WaitableLogs()
  const gatewayHome = extra.gatewayHome ?? tempDir('engine-home', t)
  const supervisor = new EngineSupervisor({
    binary,
    gatewayHome,
    engineHome: extra.engineHome ?? tempDir('engine-codex-home', t),
    clientVersion: '0.1.0-test',
    log: createLogger('debug', logs),
    timers: systemClock,
    ...extra,
  })
  const states: EngineStatus[] = []
  const exits: EngineExit[] = []
  supervisor.onState((s) => states.push(s))
  supervisor.onExit((e) => exits.push(e))
  // Whatever a test does, no engine outlives it.
  t.teardown(() => supervisor.stop())
  return { supervisor, logs, states, exits, gatewayHome }
}

const engineLines = (logs: WaitableLogs): Json[] => logs.lines.filter((l) => l.source === 'engine' && l.stream === 'stderr')

/** The `n`th log line (1-based) whose message is `msg`. */
const nthLine = (logs: WaitableLogs, msg: string, n: number): Promise<unknown> => logs.waitFor((l) => l.msg === msg && logs.lines.filter((x) => x.msg === msg).length >= n)

/** Socket inodes held open by `pid` and its descendants. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>()
  const visit = (p: number): void => {
    let fds: string[] = []
    try {
      fds = readdirSync(`/proc/${p}/fd`)
    } catch {
      return // gone meanwhile
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${p}/fd/${fd}`))
        if (m) inodes.add(m[1]!)
      } catch {
        // closed meanwhile
      }
    }
    for (const task of readdirSync(`/proc/${p}/task`)) {
      let children = ''
      try {
        children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8')
      } catch {
        continue
      }
      for (const child of children.split(/\s+/).filter(Boolean)) visit(Number(child))
    }
  }
  visit(pid)
  return inodes
}

/** Inodes of listening sockets in a `/proc/<pid>/net/tcp{,6}` table (state 0A = LISTEN). */
function listeningTcpInodes(pid: number): string[] {
  const out: string[] = []
  for (const table of ['tcp', 'tcp6']) {
    let text = ''
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
    } catch {
      continue // no IPv6 on this host
    }
    for (const row of text.trim().split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/)
      if (cols[3] === '0A') out.push(cols[9]!)
    }
  }
  return out
}

/** Inodes of listening unix sockets bound to `path` (`/proc/<pid>/net/unix`, state 01 = LISTEN). */
function listeningUnixInodes(pid: number, path: string): string[] {
  const rows = readFileSync(`/proc/${pid}/net/unix`, 'utf8').trim().split('\n').slice(1)
  return rows.map((r) => r.trim().split(/\s+/)).filter((c) => c[5] === '01' && c[7] === path).map((c) => c[6]!)
}

t.test('binary resolution', async (t) => {
  t.test('the installed platform package gives the binary and the package version', { skip: realEngineSkip }, async (t) => {
    const binary = realBinary!
    t.equal(binary.version, '0.169.0', 'version from @openai/codex package.json')
    t.match(binary.path, /@openai\/codex-[a-z0-9]+-[a-z0-9]+\/vendor\/[^/]+\/bin\/codex(\.exe)?$/, 'the native binary inside the platform package')
    t.equal(await probeEngineVersion(binary.path), '0.169.0', 'the binary itself says the same version')
  })

  t.test('an explicit path wins and must be an executable file; reasons never hold the path', async (t) => {
    const dir = tempDir('engine-bin', t)
    const runnable = writeFakeEngine(dir)
    t.same(resolveEngineBinary({ explicitPath: runnable }), { ok: true, binary: { path: runnable, version: null } })

    const notExecutable = join(dir, 'plain-file')
    writeFileSync(notExecutable, '#!/bin/sh\n')
    chmodSync(notExecutable, 0o644)
    const cases: [string, string][] = [
      [join(dir, 'missing'), 'the configured engine binary does not exist'],
      [notExecutable, 'the configured engine binary is not executable'],
      [dir, 'the configured engine binary is not a file'],
    ]
    for (const [path, reason] of cases) {
      const r = resolveEngineBinary({ explicitPath: path })
      t.same(r, { ok: false, reason }, reason)
      if (!r.ok) t.notOk(r.reason.includes(dir), 'no path in the reason')
    }
  })

  t.test('not installed, platform package missing, unsupported platform: a reason each, no throw', async (t) => {
    const bare = tempDir('engine-bare', t)
    t.same(resolveEngineBinary({ resolveFrom: join(bare, 'index.js') }), { ok: false, reason: '@openai/codex is not installed' })

    // @openai/codex present, its platform package not (an unsupported or pruned install).
    const tree = tempDir('engine-tree', t)
    const writePackage = (dir: string, version: string): void => {
      mkdirSync(dir, { recursive: true })
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: '@openai/codex', version }))
    }
    const resolveArm64 = (): EngineBinaryResolution => resolveEngineBinary({ resolveFrom: join(tree, 'index.js'), platform: 'linux', arch: 'arm64' })
    writePackage(join(tree, 'node_modules/@openai/codex'), '0.169.0')
    t.same(resolveArm64(), { ok: false, reason: '@openai/codex-linux-arm64 (the engine for linux/arm64) is not installed' })

    // The platform package without its binary…
    const pkgDir = join(tree, 'node_modules/@openai/codex-linux-arm64')
    writePackage(pkgDir, '0.169.0-linux-arm64')
    t.same(resolveArm64(), { ok: false, reason: 'the engine binary of @openai/codex-linux-arm64 does not exist' })

    // …and with it (resolved from @openai/codex's own location, as a non-hoisting install needs).
    const binDir = join(pkgDir, 'vendor/aarch64-unknown-linux-musl/bin')
    mkdirSync(binDir, { recursive: true })
    const codexPath = writeFakeEngine(binDir, 'codex')
    t.same(resolveArm64(), { ok: true, binary: { path: realpathSync(codexPath), version: '0.169.0' } })

    t.same(resolveEngineBinary({ platform: 'aix', arch: 'ppc64' }), { ok: false, reason: '@openai/codex has no build for aix/ppc64' })
  })
  t.end()
})

// One real engine serves every check that needs a healthy one (a start costs most of a second
// of CPU): it starts on an engine home that does not exist yet, is looked at on its socket,
// runs a whole turn, and is stopped last. Its fake model and approval policy change none of
// what the socket checks see.
t.test('the real engine', { skip: realEngineSkip }, async (t) => {
  const model = await FakeModel.start({ defaultText: 'The fake model streams this answer in pieces.', defaultDeltas: 12 })
  t.teardown(() => model.close())
  // codex refuses a CODEX_HOME that does not exist: a fresh machine has no ~/.codex.
  const engineHome = join(tempDir('engine-fresh-home', t), 'not-yet', '.codex')
  const h = supervise(t, realBinary!, { engineHome, configOverrides: [...model.engineConfigOverrides(), 'approval_policy="on-request"'] })
  const readySockets: string[] = []
  h.supervisor.onReady((p) => readySockets.push(p))
  const status = await h.supervisor.start()
  const pid = h.supervisor.pid

  t.test('an engine home that does not exist yet is created (0700) before the engine starts', async (t) => {
    t.same(status, { state: 'running', version: '0.169.0', reason: null }, 'ready: initialize was answered')
    t.ok(lstatSync(engineHome).isDirectory(), 'created')
    t.equal(lstatSync(engineHome).mode & 0o777, 0o700, 'private')
  })

  t.test('on a private unix socket', async (t) => {
    t.same(
      h.states.map((s) => s.state),
      ['starting', 'running'],
    )
    t.same(readySockets, [h.supervisor.socketPath], 'onReady names the socket')

    const dir = lstatSync(h.supervisor.socketDir)
    t.ok(dir.isDirectory(), 'socket directory')
    t.equal(dir.mode & 0o777, 0o700, 'socket directory is 0700')
    t.equal(dir.uid, process.getuid!(), 'owned by us')
    t.equal(h.supervisor.socketDir, join(h.gatewayHome, 'engine'), 'in the gateway home')

    t.ok(pid! > 0, 'has a pid')
    const held = socketInodes(pid!)
    t.ok(held.size > 0, 'the engine holds sockets')
    t.same(
      listeningTcpInodes(pid!).filter((inode) => held.has(inode)),
      [],
      'no listening TCP socket belongs to the engine',
    )
    // The engine binds its real socket elsewhere and links ours to it: ours must lead to it.
    const target = realpathSync(h.supervisor.socketPath)
    t.ok(
      listeningUnixInodes(pid!, target).some((inode) => held.has(inode)),
      'the engine listens on the unix socket our path leads to',
    )

    // A client of our own gets the same answer readiness saw.
    const client = await EngineRpcClient.connect(h.supervisor.socketPath, { log: createLogger('debug', h.logs), timers: systemClock })
    t.teardown(() => client.close())
    const init = (await client.call('initialize', { clientInfo: { name: 'engine-test', title: null, version: '1' } }, 10_000)) as Json
    // The engine keeps the first initializer (the readiness probe) as its originator.
    t.match(init.userAgent, /^app-server-gateway\/0\.169\.0 \(.*\(engine-test; 1\)$/, 'the engine names its version and this client')
    client.close()

    const bubblewrap = await h.logs.waitFor((l) => l.source === 'engine' && l.stream === 'stderr' && /bubblewrap/.test(String(l.msg)))
    t.equal(bubblewrap.level, INFO, 'the harmless bubblewrap notice is info, not error')
    t.notMatch(String(bubblewrap.msg), /\x1b\[/, 'terminal colours removed')
    t.ok(engineLines(h.logs).length >= 1, 'engine stderr arrives as log lines with source "engine"')
  })

  t.test('a whole turn through the rpc client and the fake model', async (t) => {
    const client = await EngineRpcClient.connect(h.supervisor.socketPath, { log: createLogger('debug', h.logs), timers: systemClock })
    t.teardown(() => client.close())
    const notes: { method: string; params: Json }[] = []
    const waiters: { method: string; resolve: (p: Json) => void }[] = []
    client.onNotification((method, params) => {
      notes.push({ method, params: params as Json })
      for (const w of waiters.filter((w) => w.method === method)) w.resolve(params as Json)
    })
    const next = (method: string): Promise<Json> => new Promise((resolve) => waiters.push({ method, resolve }))
    const approvals: Json[] = []
    client.onRequest((method, params) => {
      approvals.push({ method, params })
      return { decision: 'accept' }
    })

    await client.call('initialize', { clientInfo: { name: 'engine-test', title: null, version: '1' } }, 10_000)
    client.notify('initialized')
    const cwd = tempDir('engine-work', t)
    const thread = (await client.call('thread/start', { cwd }, 20_000)) as Json
    const threadId = thread.thread.id as string
    t.type(threadId, 'string')

    // 1. A plain answer, streamed.
    let completed = next('turn/completed')
    const turn = (await client.call('turn/start', { threadId, input: [{ type: 'text', text: 'say something', text_elements: [] }] }, 20_000)) as Json
    t.equal(turn.turn.status, 'inProgress')
    t.equal((await completed).turn.status, 'completed')
    const deltas = notes.filter((n) => n.method === 'item/agentMessage/delta')
    t.equal(deltas.length, 12, 'one delta notification per streamed piece')
    t.equal(deltas.map((d) => d.params.delta).join(''), 'The fake model streams this answer in pieces.')
    t.ok(
      deltas.every((d) => d.params.threadId === threadId && d.params.turnId === turn.turn.id),
      'deltas name the thread and turn',
    )
    const request = model.responseCalls[0]!.body as Json
    t.equal(request.stream, true, 'codex asked the fake model for a stream')

    // 2. A command that needs approval: the engine asks over the same connection; accepting runs it.
    model.script({ kind: 'function_call', name: 'exec_command', arguments: JSON.stringify({ cmd: 'echo hi', sandbox_permissions: 'require_escalated' }) })
    completed = next('turn/completed')
    const commandCompleted = new Promise<Json>((resolve) => {
      client.onNotification((method, params) => {
        if (method === 'item/completed' && (params as Json).item.type === 'commandExecution') resolve(params as Json)
      })
    })
    await client.call('turn/start', { threadId, input: [{ type: 'text', text: 'run it', text_elements: [] }] }, 20_000)
    t.equal((await completed).turn.status, 'completed')
    t.match(approvals, [{ method: 'item/commandExecution/requestApproval', params: { threadId, command: /echo hi/ } }])
    // The command runs in its own exec session: its completion may trail the turn's on a loaded machine.
    const ran = await commandCompleted
    t.match(ran.item, { status: 'completed', aggregatedOutput: /hi/ })
    t.ok(notes.some((n) => n.method === 'serverRequest/resolved'), 'the engine saw the approval answered')
    t.equal(model.responseCalls.length, 3, 'the tool output went back to the model for a final answer')
  })

  t.test('stop', async (t) => {
    await h.supervisor.stop()
    t.same(h.supervisor.status, { state: 'off', version: '0.169.0', reason: null }, 'off after stop')
    t.same(h.exits, [{ code: 0, signal: null, expected: true }], 'one expected exit')
    t.throws(() => process.kill(pid!, 0), { code: 'ESRCH' }, 'the process is gone')
    t.equal(h.supervisor.pid, null)
  })
})

t.test('a socket directory that is not 0700 is refused before anything is spawned', async (t) => {
  const home = tempDir('engine-home', t)
  mkdirSync(join(home, 'engine'), { mode: 0o755 })
  chmodSync(join(home, 'engine'), 0o755)
  const h = supervise(t, { path: writeFakeEngine(tempDir('engine-bin', t)), version: null }, { gatewayHome: home, env: { FAKE_ENGINE_MODE: 'idle' } })
  const status = await h.supervisor.start()
  t.same(status, { state: 'unavailable', version: null, reason: 'the engine socket directory has mode 755, not 700' })
  t.equal(h.supervisor.pid, null, 'nothing spawned')
  t.same(h.exits, [])
  t.ok(h.logs.lines.some((l) => l.level === ERROR && l.event === 'engine.start_failed'), 'logged with its cause')
})

t.test('start-up failures give unavailable with a short reason, logged with their cause', async (t) => {
  const dir = tempDir('engine-bin', t)

  t.test('missing binary', async (t) => {
    const missing = join(dir, 'no-such-codex')
    const h = supervise(t, { path: missing, version: null })
    t.same(await h.supervisor.start(), { state: 'unavailable', version: null, reason: 'engine binary not found' })
    const line = h.logs.lines.find((l) => l.event === 'engine.spawn_failed')
    t.match(line, { level: ERROR, cause: 'ENOENT' })
    t.same(h.exits, [{ code: null, signal: null, expected: false }])
    t.notOk(JSON.stringify(h.supervisor.status).includes(dir), 'no path in the status')
  })

  t.test('binary not executable', async (t) => {
    const plain = join(dir, 'codex-not-executable')
    writeFileSync(plain, '#!/bin/sh\nexit 0\n')
    chmodSync(plain, 0o644)
    const h = supervise(t, { path: plain, version: '0.169.0' })
    t.same(await h.supervisor.start(), { state: 'unavailable', version: '0.169.0', reason: 'engine binary is not executable' })
    t.match(
      h.logs.lines.find((l) => l.event === 'engine.spawn_failed'),
      { level: ERROR, cause: 'EACCES' },
    )
  })

  t.test('the real engine exits at once on a bad -c value', { skip: realEngineSkip }, async (t) => {
    const h = supervise(t, realBinary!, { configOverrides: ['approval_policy="not-a-policy"'] })
    const status = await h.supervisor.start()
    t.same(status, { state: 'unavailable', version: '0.169.0', reason: 'engine exited during start-up (code 1)' })
    t.match(h.exits, [{ code: 1, signal: null, expected: false }])
    t.match(
      h.logs.lines.find((l) => l.event === 'engine.exit'),
      { level: ERROR, code: 1, duringStartup: true },
    )
    // The engine's own words say why, at error level.
    const said = await h.logs.waitFor((l) => l.source === 'engine' && l.stream === 'stderr' && /not-a-policy/.test(String(l.msg)))
    t.equal(said.level, ERROR)
  })

  t.test('an engine that never becomes ready is given up after the timeout and stopped', async (t) => {
    const timers = new ManualClock()
    const h = supervise(t, { path: writeFakeEngine(dir), version: null }, { timers, env: { FAKE_ENGINE_MODE: 'idle' }, readyTimeoutMs: 30_000 })
    const settled = h.supervisor.start()
    await h.logs.waitFor((l) => l.msg === 'fake engine: up')
    t.equal(h.supervisor.status.state, 'starting')
    const pid = h.supervisor.pid!
    // Each readiness poll reschedules after its failed connect: let those callbacks run between timeouts.
    await timers.advanceSettling(30_000)
    t.same(await settled, { state: 'unavailable', version: null, reason: 'engine not ready after 30 s' })
    t.match(
      h.logs.lines.find((l) => l.event === 'engine.not_ready'),
      { level: ERROR, timeoutMs: 30_000 },
    )
    await h.supervisor.stop()
    t.same(h.exits, [{ code: null, signal: 'SIGTERM', expected: true }], 'stopped with SIGTERM')
    t.equal(h.supervisor.status.reason, 'engine not ready after 30 s', 'the timeout stays the reason')
    t.throws(() => process.kill(pid, 0), { code: 'ESRCH' })
  })

  t.test('an early exit of a stand-in binary', async (t) => {
    const h = supervise(t, { path: writeFakeEngine(dir), version: null }, { env: { FAKE_ENGINE_MODE: 'exit' } })
    t.same(await h.supervisor.start(), { state: 'unavailable', version: null, reason: 'engine exited during start-up (code 3)' })
    const said = await h.logs.waitFor((l) => l.msg === 'Error: fake failure')
    t.equal(said.level, ERROR)
  })
  t.end()
})

t.test('stop: SIGTERM, then SIGKILL after 5 s (injected timer) for an engine that ignores SIGTERM', async (t) => {
  const timers = new ManualClock()
  const secret = canary('engine-stderr')
  const longLine = 'x'.repeat(MAX_ENGINE_LINE_CHARS * 3)
  const h = supervise(t, { path: writeFakeEngine(tempDir('engine-bin', t)), version: null }, {
    timers,
    env: {
      FAKE_ENGINE_MODE: 'ignore-term',
      FAKE_ENGINE_LINES: [`\x1b[31mERROR\x1b[0m probe: Authorization: Bearer ${secret}`, `2026-01-01T00:00:00Z WARN codex_core: fetching /x?token=${secret}`, longLine].join('\n'),
      // The gateway's own settings never reach the engine.
      APP_SERVER_TOKEN: secret,
    },
  })
  const settled = h.supervisor.start()
  await h.logs.waitFor((l) => l.msg === 'fake engine: up')
  const pid = h.supervisor.pid!
  t.notOk(readFileSync(`/proc/${pid}/environ`, 'utf8').includes('APP_SERVER_TOKEN'), 'APP_SERVER_* is not passed to the engine')

  // stderr: one line each, scrubbed, capped, level from the line.
  const lines = engineLines(h.logs)
  t.match(lines[0], { level: INFO, msg: 'ERROR probe: Authorization: Bearer [redacted]' })
  t.match(lines[1], { level: WARN, msg: /token=\[redacted\]$/ })
  t.ok(String(lines[2]!.msg).length < MAX_ENGINE_LINE_CHARS + 40, 'a long line is capped')
  t.match(lines[2]!.msg, /… \[4000 more chars\]$/)
  t.same(leakedCanaries(h.logs.text()), [], 'no secret in the engine log lines')

  const stopped = h.supervisor.stop()
  await h.logs.waitFor((l) => l.msg === 'fake engine: got SIGTERM')
  t.same(timers.pendingDelays(), [5_000], 'only the SIGKILL timer is waiting (readiness polling was cancelled)')
  t.same(h.exits, [], 'still running after SIGTERM')
  t.equal(h.supervisor.status.state, 'starting', 'still starting until it has exited')
  timers.advance(5_000)
  await stopped
  t.same(await settled, { state: 'off', version: null, reason: null }, 'a stop during start-up settles the start as off')
  t.same(h.exits, [{ code: null, signal: 'SIGKILL', expected: true }])
  t.ok(h.logs.lines.some((l) => l.level === WARN && l.event === 'engine.kill'), 'the SIGKILL is logged')
  t.same(h.supervisor.status, { state: 'off', version: null, reason: null })
  t.throws(() => process.kill(pid, 0), { code: 'ESRCH' })

  // Restartable: a second start after an exit runs a new process.
  const again = h.supervisor.start({ restarting: true })
  t.equal(h.supervisor.status.state, 'restarting')
  await nthLine(h.logs, 'fake engine: up', 2)
  t.not(h.supervisor.pid, pid, 'a new process')
  const stopAgain = h.supervisor.stop()
  await nthLine(h.logs, 'fake engine: got SIGTERM', 2)
  timers.advance(5_000)
  await stopAgain
  t.same((await again).state, 'off')
})
