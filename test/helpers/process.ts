/**
 * Real subprocesses for tests: one spawner (output collected, a deadline that kills, waits on
 * what the process prints rather than on time) and, on top of it, the built CLI
 * (`dist/src/main.js`) run to completion or started as a server. Whatever a test says may hold
 * secrets is recorded for the canary leak check once the process has ended.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { record } from './canary.js'
import { tempDir } from './temp-dir.js'
import { withTimeout } from './wait.js'

export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url))

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface RunResult extends Exit {
  stdout: string
  stderr: string
}

type Stream = 'stdout' | 'stderr'

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Killed (SIGKILL) when still running after this long (default 60 s: a guard against a hung process, not a wait; 15 s killed healthy CLI runs on a loaded machine); null for a server that runs until stopped. */
  timeoutMs?: number | null
  /** `pipe` gives the test `child.stdin`; `input` writes this and closes it. */
  stdin?: 'ignore' | 'pipe'
  input?: string
  /** The streams recorded for the leak check when the process ends (default both). */
  record?: readonly Stream[]
  /** Run as this user and group (a test running as root starting an unprivileged process). */
  uid?: number
  gid?: number
}

export interface Spawned {
  readonly child: ChildProcess
  stdout(): string
  stderr(): string
  /** The first match of `re` in the stream; rejects if the process ends without one. */
  waitFor(stream: Stream, re: RegExp): Promise<RegExpExecArray>
  readonly exited: Promise<Exit>
  /** SIGKILL, unless it has already ended. */
  kill(): void
}

export function spawnProcess(cmd: string, args: readonly string[], options: SpawnOptions = {}): Spawned {
  const stdin = options.input !== undefined ? 'pipe' : (options.stdin ?? 'ignore')
  const ids = options.uid === undefined ? {} : { uid: options.uid, gid: options.gid ?? options.uid }
  const child = spawn(cmd, args, { env: options.env, cwd: options.cwd, stdio: [stdin, 'pipe', 'pipe'], ...ids })
  if (options.input !== undefined) child.stdin!.end(options.input)
  const out: Record<Stream, string> = { stdout: '', stderr: '' }
  let waiters: (() => void)[] = []
  const wake = () => {
    const w = waiters
    waiters = []
    for (const f of w) f()
  }
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]!.on('data', (d: Buffer) => {
      out[stream] += d.toString()
      wake()
    })
  }
  const timeoutMs = options.timeoutMs === undefined ? 60_000 : options.timeoutMs
  const timer = timeoutMs === null ? undefined : setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  let ended = false
  const exited = new Promise<Exit>((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer)
      ended = true
      wake()
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      ended = true
      for (const stream of options.record ?? ['stdout', 'stderr']) record(out[stream])
      wake()
      resolve({ code, signal })
    })
  })
  // A caller that only waits on output still sees a spawn failure there, never as an unhandled rejection.
  exited.catch(() => {})
  return {
    child,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    },
    async waitFor(stream, re) {
      for (;;) {
        const m = re.exec(out[stream])
        if (m) return m
        if (ended) throw new Error(`process ended without ${String(re)} on ${stream}; stderr: ${out.stderr}`)
        await new Promise<void>((r) => waiters.push(r))
      }
    },
  }
}

/** Runs a process to completion. */
export async function runProcess(cmd: string, args: readonly string[], options: SpawnOptions = {}): Promise<RunResult> {
  const p = spawnProcess(cmd, args, options)
  const exit = await p.exited
  return { ...exit, stdout: p.stdout(), stderr: p.stderr() }
}

/** Runs `node args…` to completion (scripts and `-e` snippets). */
export function runNode(args: readonly string[], options: SpawnOptions = {}): Promise<RunResult> {
  return runProcess(process.execPath, args, options)
}

/**
 * A clean environment for the CLI: no APP_SERVER_* leaking in from the developer's shell, and
 * throwaway homes (the user's and the server's), so no test reads or writes the developer's
 * credentials or configuration. `extra` wins.
 */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // No engine unless a test asks for one: none spawned, the developer's ~/.codex never read.
  return { PATH: process.env.PATH ?? '', HOME: tempDir('cli-user-home'), APP_SERVER_HOME: tempDir('cli-home'), APP_SERVER_ENGINE: 'off', ...extra }
}

/** Runs the CLI to completion (for refusals and `--help`). stdout (logs) is recorded. */
export function runCli(
  args: readonly string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return runProcess(process.execPath, [MAIN, ...args], {
    env: cliEnv(options.env),
    cwd: options.cwd ?? process.cwd(),
    timeoutMs: options.timeoutMs,
    input: options.input,
    record: ['stdout'],
  })
}

/** How long `startCli` lets a server take to print its banner before calling it dead. */
const BANNER_DEADLINE_MS = 60_000

export interface RunningServer {
  readonly child: ChildProcess
  /** The banner, as printed on stderr. */
  readonly banner: string
  /** The `listening on:` URL from the banner. */
  readonly url: string
  readonly port: number
  stdout(): string
  stderr(): string
  /** Sends a signal and resolves with the exit code once the process has ended. */
  stop(signal?: NodeJS.Signals): Promise<Exit>
}

/**
 * Starts a long-running server and resolves once its banner is complete. The banner (its
 * warning line included) is one write of a few hundred bytes to a pipe, which is atomic: once
 * its `engine:` line has arrived, all of it has.
 */
export async function startCli(args: readonly string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<RunningServer> {
  const p = spawnProcess(process.execPath, [MAIN, ...args], { env: cliEnv(options.env), cwd: options.cwd ?? process.cwd(), timeoutMs: null, record: ['stdout'] })
  let url: string
  try {
    // A deadline, not a wait: it only ends a server that never comes up. A start-up takes well
    // under a second alone, but tens of seconds on a 2-core machine running several test files
    // and other builds at once, which a tighter deadline turned into failures.
    await withTimeout(p.waitFor('stderr', /healthz: \S+\n {2}note: [^\n]*\n {2}engine: [^\n]*\n/), BANNER_DEADLINE_MS, 'the server to print its banner')
    url = (await p.waitFor('stderr', /listening on: (\S+)/))[1]!
  } catch (err) {
    p.kill()
    const exit = p.child.exitCode
    throw new Error(exit === null ? `server did not print its banner (${(err as Error).message}); stderr: ${p.stderr()}` : `server exited early with ${exit}; stderr: ${p.stderr()}`)
  }
  return {
    child: p.child,
    banner: p.stderr(),
    url,
    port: Number(/:(\d+)\//.exec(url)?.[1]),
    stdout: () => p.stdout(),
    stderr: () => p.stderr(),
    stop: (signal = 'SIGTERM') => {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal)
      return p.exited
    },
  }
}
