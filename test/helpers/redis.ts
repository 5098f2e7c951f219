/**
 * A real `redis-server` for the tests of shared limits, on a free loopback port, with no
 * persistence. Absent binary: `redisOrSkip` skips outside CI and fails under `CI` (where
 * `.ci/redis-deps.sh` installs it).
 */
import { execFileSync } from 'node:child_process'
import { createServer } from 'node:net'
import type { Test } from 'tap'
import { spawnProcess, type Spawned } from './process.js'

export interface RedisServer {
  readonly url: string
  readonly port: number
  /** Ends the server (SIGKILL) and waits until it has exited. */
  stop(): Promise<void>
}

function redisBinary(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}

/** A port free right now on 127.0.0.1 (redis needs a real one: it cannot report port 0). */
async function freePort(): Promise<number> {
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as { port: number }
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  return port
}

/** A started redis-server, or null after skipping (no binary, not in CI). */
export async function redisOrSkip(t: Test, options: { password?: string } = {}): Promise<RedisServer | null> {
  const bin = redisBinary()
  if (bin === null) {
    if (process.env.CI) t.fail('redis-server is not installed (.ci/redis-deps.sh installs it)')
    else t.test('shared limits on Redis', { skip: 'redis-server is not installed (Debian: apt-get install redis-server)' }, () => {})
    return null
  }
  const port = await freePort()
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  if (options.password !== undefined) args.push('--requirepass', options.password)
  const server: Spawned = spawnProcess(bin, args, { timeoutMs: null })
  await server.waitFor('stdout', /Ready to accept connections/)
  return {
    url: options.password === undefined ? `redis://127.0.0.1:${port}` : `redis://:${options.password}@127.0.0.1:${port}`,
    port,
    async stop() {
      server.kill()
      await server.exited
    },
  }
}
