import pretty from 'pino-pretty'
import type { DestinationStream } from 'pino'

/**
 * Human-readable logs, for a terminal only (JSON lines otherwise): to `destination` (a file
 * descriptor or a stream; stdout by default), colours unless `NO_COLOR` asks for none.
 */
export function prettyDestination(options: { colors: boolean; destination?: 1 | 2 | NodeJS.WritableStream }): DestinationStream {
  return pretty({ destination: options.destination ?? 1, colorize: options.colors, sync: true })
}

/** `NO_COLOR` set to anything but the empty string turns colours off (no-color.org). */
export function colorsWanted(env: Readonly<Record<string, string | undefined>>): boolean {
  return (env.NO_COLOR ?? '') === ''
}
