import pretty from 'pino-pretty'
import type { DestinationStream } from 'pino'

/** Human-readable logs, for a terminal only (JSON lines otherwise); colours unless `NO_COLOR` asks for none. */
export function prettyDestination(options: { colors: boolean }): DestinationStream {
  return pretty({ destination: 1, colorize: options.colors, sync: true })
}
