/** A refusal to start: one line for stderr, exit code 2 (as clap does in codex). */
export class ConfigError extends Error {
  readonly exitCode = 2
  override name = 'ConfigError'
}

/**
 * A value echoed in a refusal: control characters escaped (so the refusal stays one line and
 * cannot forge log lines), and cut at 200 characters.
 */
export function shown(value: string): string {
  const escaped = value.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))
  return escaped.length > 200 ? escaped.slice(0, 200) + '...' : escaped
}
