/**
 * The `userAgent` that `initialize` returns, built as codex builds it:
 * `{originator}/{version} ({os} {release}; {arch}) {terminal} ({clientName}; {clientVersion})`.
 * As in codex, the originator is process-wide: the first client to initialize names it.
 */

export interface UserAgentFacts {
  readonly version: string
  readonly osType: string
  readonly osRelease: string
  readonly arch: string
  /** `$TERM`, or `unknown`. */
  readonly terminal: string
}

// Characters an HTTP header value may not hold: controls other than tab, and DEL.
const HEADER_UNSAFE = /[\x00-\x08\x0a-\x1f\x7f]/

export function isValidHeaderValue(value: string): boolean {
  return !HEADER_UNSAFE.test(value)
}

const ARCH_NAMES: Readonly<Record<string, string>> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'x86' }

export class UserAgent {
  private originator: string | null = null
  private readonly platform: string

  constructor(private readonly facts: UserAgentFacts) {
    this.platform = `(${facts.osType} ${facts.osRelease}; ${ARCH_NAMES[facts.arch] ?? facts.arch}) ${facts.terminal}`
  }

  /** The user agent for a client; the first call fixes the originator for the process. */
  forClient(name: string, version: string): string {
    this.originator ??= name
    const ua = `${this.originator}/${this.facts.version} ${this.platform} (${name}; ${version})`
    return isValidHeaderValue(ua) ? ua : ua.replace(new RegExp(HEADER_UNSAFE.source, 'g'), '_')
  }
}
