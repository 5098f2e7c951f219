/** Runs the built CLI (`dist/src/main.js`) as a real subprocess. */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { record } from './canary.js'
import { tempDir } from './temp-dir.js'

export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url))

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

function baseEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  // A clean environment: no APP_SERVER_* leaking in from the developer's shell.
  // Throwaway homes (the user's and the server's), so no test reads or writes the developer's
  // credentials or configuration. No engine unless a test asks for one: none spawned, the
  // developer's ~/.codex never read.
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: tempDir('cli-user-home'),
    APP_SERVER_HOME: tempDir('cli-home'),
    APP_SERVER_ENGINE: 'off',
  }
  return { ...env, ...extra }
}

/** Runs the CLI to completion (for refusals and `--help`). stdout (logs) is recorded. */
export function runCli(
  args: readonly string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      env: baseEnv(options.env ?? {}),
      cwd: options.cwd ?? process.cwd(),
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    if (options.input !== undefined) child.stdin!.end(options.input)
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      record(stdout)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

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
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Starts a long-running server and resolves once its banner is complete. */
export function startCli(args: readonly string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: baseEnv(options.env ?? {}), cwd: options.cwd ?? process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
      child.on('close', (code, signal) => {
        record(stdout)
        res({ code, signal })
      }),
    )
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`server did not print its banner; stderr: ${stderr}`))
    }, 15_000)
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
      const m = /listening on: (\S+)/.exec(stderr)
      if (m && /healthz: \S+\n {2}note: [^\n]*\n {2}engine: [^\n]*\n/.test(stderr)) {
        clearTimeout(timer)
        const url = m[1]!
        const port = Number(/:(\d+)\//.exec(url)?.[1])
        // Give a possible trailing warning line the chance to arrive with the banner.
        setTimeout(
          () =>
            resolve({
              child,
              banner: stderr,
              url,
              port,
              stdout: () => stdout,
              stderr: () => stderr,
              stop: (signal = 'SIGTERM') => {
                if (child.exitCode === null && child.signalCode === null) child.kill(signal)
                return exited
              },
            }),
          50,
        )
      }
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      reject(new Error(`server exited early with ${code}; stderr: ${stderr}`))
    })
  })
}
