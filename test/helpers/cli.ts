/**
 * The CLI's commands that finish (`login`, `logout`, `status`, `list`, `help`, `--help`,
 * `--version`, and command lines refused before a server starts) run inside the test
 * process: the same `runCli` that `dist/src/main.js` calls, with the same clean environment the
 * subprocess runner gives (`cliEnv`), stdin from a string, stdout and stderr collected. A
 * subprocess costs a node start-up plus the account service's imports (most of a second of CPU);
 * this costs milliseconds, so a test about what a command does runs here, and a test about the
 * process itself (its exit status, signals, the real binary's streams) uses `runCli` from
 * `process.ts`.
 *
 * Never a command that starts a server: that one installs signal handlers and keeps running.
 * The working directory (where `.env` is read) is this process's, as `runCli` in `process.ts`
 * defaults to. stdout is recorded for the leak check, as there.
 */
import { Readable, Writable } from 'node:stream'
import { runCli } from '../../src/cli/run.js'
import type { Clock } from '../../src/clock.js'
import { record } from './canary.js'
import { cliEnv } from './process.js'

export interface CommandResult {
  /** What `main.js` would set as the exit code. */
  code: number
  stdout: string
  stderr: string
}

const FINISHING_COMMANDS = new Set(['login', 'logout', 'status', 'list', 'help'])

/** A stream that appends what is written to it, standing in for a terminal's stdout or stderr (or a pipe). */
function collector(append: (text: string) => void, isTTY: boolean): NodeJS.WriteStream {
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      append(chunk.toString())
      done()
    },
  })
  // runCli writes and checks isTTY only.
  return Object.assign(sink, { isTTY }) as unknown as NodeJS.WriteStream
}

export async function runCommand(
  args: readonly string[],
  options: {
    env?: Record<string, string>
    input?: string
    /** Called with everything written so far, after each write. */
    onStdout?: (text: string) => void
    onStderr?: (text: string) => void
    /** stdout and stderr claim to be a terminal (they are pipes otherwise). */
    tty?: boolean
    /** stdin stands for a terminal (`isTTY`), as when a person runs the command and types. */
    stdinIsTTY?: boolean
    /** Drives the login commands' waits. */
    clock?: Clock
    /**
     * The test expects the command refused and finished here (a bad command line, or a command
     * that would serve but must refuse): should it serve instead, the test hangs and fails.
     */
    refused?: boolean
  } = {},
): Promise<CommandResult> {
  const finishes = FINISHING_COMMANDS.has(args[0] ?? '') || ['--help', '-h', '--version', '-V'].some((a) => args.includes(a))
  if (!finishes && !options.refused) {
    throw new Error(`runCommand runs commands that finish; \`${args.join(' ')}\` would start a server (use startCli)`)
  }
  let stdout = ''
  let stderr = ''
  const code = await runCli(args, {
    env: cliEnv(options.env),
    stdout: collector((s) => {
      stdout += s
      options.onStdout?.(stdout)
    }, options.tty ?? false),
    stderr: collector((s) => {
      stderr += s
      options.onStderr?.(stderr)
    }, options.tty ?? false),
    stdin: Object.assign(Readable.from(options.input === undefined ? [] : [Buffer.from(options.input)]), { isTTY: options.stdinIsTTY === true }),
    ...(options.clock ? { clock: options.clock } : {}),
  })
  record(stdout)
  return { code, stdout, stderr }
}
