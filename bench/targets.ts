/**
 * Starting the servers under test as subprocesses, and reading their memory.
 *
 * Nothing outlives the benchmark: every process started here (and every engine the benchmark
 * starts itself, see `trackProcess`) is remembered until it has exited. Should the run end
 * any other way — an exception, Ctrl-C, SIGTERM — each remembered process is killed on the way
 * out. Targets run in a process group of their own and are killed as a group, so a gateway
 * killed this way takes its engine with it; when a target exits, whatever it left in its
 * group (the engine of a gateway that crashed) is killed then. The temporary directories
 * made with `benchTempDir` go on the way out too.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Target {
  readonly name: string
  readonly command: string
  /** Called at each start (the codex peer needs a fresh port each time). */
  readonly args: () => readonly string[]
  readonly env?: Record<string, string>
}

export interface RunningTarget {
  readonly name: string
  /** URL to connect to, token included where the target has one. */
  readonly url: string
  readonly pid: number
  stop(): Promise<void>
}

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url))

export function projectTarget(): Target {
  return {
    name: 'app-server',
    command: process.execPath,
    // One client address opening thousands of sockets would be throttled by design: the
    // per-address and per-connection limits are off for the measurement.
    args: () => [here('../src/main.js'), '--listen', 'ws://127.0.0.1:0', '--log-level', 'warn', '--http-rate-limit', '0', '--rpc-rate', '0'],
    env: { APP_SERVER_HOME: benchTempDir('home').path },
  }
}

export function bareTarget(): Target {
  return { name: 'bare ws', command: process.execPath, args: () => [here('./bare-server.js')] }
}

/**
 * The real codex app-server (`codex app-server --listen`); 0.169.0 has no generated query token,
 * so on loopback without `--ws-auth` it accepts any client.
 */
export function codexTarget(bin: string): Target {
  return {
    name: 'codex',
    command: bin,
    // A fresh port each start, below the ephemeral range the benchmark's client sockets fill.
    args: () => ['app-server', '--listen', `ws://127.0.0.1:${20_000 + Math.floor(Math.random() * 10_000)}`],
    env: { CODEX_HOME: benchTempDir('codex').path },
  }
}

/** Process ids, and whether each leads a process group of its own (killed as a whole). */
const running = new Map<number, { readonly group: boolean }>()
const tempDirs = new Set<string>()

/** A fresh directory under the system temp dir, removed by `remove()` or, at the latest, on exit. */
export function benchTempDir(label: string): { readonly path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `bench-${label}-`))
  tempDirs.add(path)
  return {
    path,
    remove: () => {
      rmSync(path, { recursive: true, force: true })
      tempDirs.delete(path)
    },
  }
}

/**
 * Remembers `pid` until `untrack`, so it is killed if the run ends early: with its whole
 * process group when `group` (a target spawned detached, whose engine is in that group).
 */
export function trackProcess(pid: number, group = false): () => void {
  running.set(pid, { group })
  return () => running.delete(pid)
}

function kill(pid: number, group: boolean): void {
  try {
    process.kill(group ? -pid : pid, 'SIGKILL')
  } catch {
    // exited meanwhile
  }
}

function killLeftovers(): void {
  for (const [pid, { group }] of running) kill(pid, group)
  running.clear()
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
}
process.once('exit', killLeftovers)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping what it started\n`)
    process.exit(130)
  })
}

export function startTarget(target: Target): Promise<RunningTarget> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(target.command, [...target.args()], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...target.env },
      stdio: ['ignore', 'ignore', 'pipe'],
      // A process group of its own, so whatever it starts (the gateway's engine) can be killed with it.
      detached: true,
    })
    if (child.pid !== undefined) {
      const pid = child.pid
      const untrack = trackProcess(pid, true)
      child.once('exit', () => {
        untrack()
        kill(pid, true)
      })
    }
    let stderr = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${target.name} did not start: ${stderr}`))
    }, 20_000)
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString()
      const m = /listening on: (\S+)/.exec(stderr.replace(/\x1b\[[0-9;]*m/g, ''))
      if (m) {
        clearTimeout(timer)
        child.stderr!.removeAllListeners('data')
        child.stderr!.resume()
        resolve({
          name: target.name,
          url: m[1]!,
          pid: child.pid!,
          stop: () =>
            new Promise<void>((res) => {
              if (child.exitCode !== null) return res()
              child.once('exit', () => res())
              child.kill('SIGTERM')
              setTimeout(() => child.kill('SIGKILL'), 5_000).unref()
            }),
        })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${target.name} exited with ${code}: ${stderr}`))
    })
  })
}

/** Resident set size of a process, in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN)
  return kb * 1024
}
