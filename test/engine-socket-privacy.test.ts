/**
 * The engine's socket must be private to this user, wherever codex really puts it: the link
 * is followed and the real socket and its directory checked (src/engine/socket-privacy.ts);
 * an engine listening on a socket others could reach is stopped and reported, never used.
 */
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { EngineSupervisor } from '../src/engine/supervisor.js'
import { socketExposure } from '../src/engine/socket-privacy.js'
import { systemClock } from '../src/clock.js'
import { createLogger } from '../src/log/logger.js'
import { WaitableLogs, writeFakeEngine } from './helpers/engine-kit.js'
import { tempDir } from './helpers/temp-dir.js'

type Test = import('tap').Test

async function listenAt(t: Test, path: string, mode: number): Promise<Server> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(path, resolve))
  chmodSync(path, mode)
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return server
}

t.test('socketExposure', async (t) => {
  const root = tempDir('socket-privacy', t)
  const privateDir = join(root, 'private')
  mkdirSync(privateDir, { mode: 0o700 })
  await listenAt(t, join(privateDir, 'ok.sock'), 0o600)
  t.equal(socketExposure(join(privateDir, 'ok.sock')), null, 'ours, 0600 in a 0700 directory: private')

  const link = join(root, 'link.sock')
  symlinkSync(join(privateDir, 'ok.sock'), link)
  t.equal(socketExposure(link), null, 'a link to a private socket (as codex makes it): private')

  await listenAt(t, join(privateDir, 'open.sock'), 0o666)
  t.equal(socketExposure(join(privateDir, 'open.sock')), 'the engine socket is reachable by other users (mode 666)')

  const sharedDir = join(root, 'shared')
  mkdirSync(sharedDir, { mode: 0o755 })
  chmodSync(sharedDir, 0o755)
  await listenAt(t, join(sharedDir, 's.sock'), 0o600)
  const sharedLink = join(root, 'shared-link.sock')
  symlinkSync(join(sharedDir, 's.sock'), sharedLink)
  t.equal(socketExposure(sharedLink), 'the engine socket directory is reachable by other users (mode 755)', 'the real directory is what counts, not the link')

  symlinkSync(join(root, 'missing.sock'), join(root, 'dangling.sock'))
  t.equal(socketExposure(join(root, 'dangling.sock')), 'the engine socket cannot be checked')
  writeFileSync(join(privateDir, 'file.sock'), '')
  t.equal(socketExposure(join(privateDir, 'file.sock')), 'the engine socket is not a socket')
  t.equal(socketExposure(join(privateDir, 'ok.sock'), 4242), 'the engine socket is not owned by this user')
  for (const reason of ['the engine socket cannot be checked', socketExposure(sharedLink)]) t.notOk(String(reason).includes(root), 'no path in a reason')
})

t.test('an engine whose real socket others can reach is stopped and reported, not used', async (t) => {
  const dir = tempDir('socket-privacy-engine', t)
  const logs = new WaitableLogs()
  const supervisor = new EngineSupervisor({
    binary: { path: writeFakeEngine(dir), version: null },
    gatewayHome: tempDir('socket-privacy-home', t),
    engineHome: tempDir('socket-privacy-codex-home', t),
    clientVersion: '0.1.0-test',
    log: createLogger('debug', logs),
    timers: systemClock,
    env: { ...process.env, FAKE_ENGINE_MODE: 'listen-shared' },
  })
  let readies = 0
  supervisor.onReady(() => readies++)
  t.teardown(() => supervisor.stop())
  const status = await supervisor.start()
  t.same(status, { state: 'unavailable', version: '0.169.0', reason: 'the engine socket is reachable by other users (mode 666)' })
  t.equal(readies, 0, 'never announced ready: no control connection, no client upstream')
  t.match(logs.lines.find((l) => l.event === 'engine.socket_exposed'), { level: 50 }, 'logged as an error')
  await supervisor.stop()
  t.equal(supervisor.pid, null, 'the engine was stopped')
})
