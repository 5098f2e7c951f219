/**
 * The `userAgent` that `initialize` returns, built as codex builds it:
 * `{originator}/{version} ({os} {release}; {arch}) {terminal} ({clientName}; {clientVersion})`.
 * As in codex, the originator is process-wide: the first client to initialize names it.
 */
import { replaceHeaderControls } from '../util/header-value.js'
import { rustArch } from '../util/rust-platform.js'

export interface UserAgentFacts {
  readonly version: string
  readonly osType: string
  readonly osRelease: string
  readonly arch: string
  /** `$TERM`, or `unknown`. */
  readonly terminal: string
}

export class UserAgent {
  private originator: string | null = null
  private readonly platform: string

  constructor(private readonly facts: UserAgentFacts) {
    this.platform = `(${facts.osType} ${facts.osRelease}; ${rustArch(facts.arch)}) ${facts.terminal}`
  }

  /** The user agent for a client; the first call fixes the originator for the process. */
  forClient(name: string, version: string): string {
    this.originator ??= name
    const ua = `${this.originator}/${this.facts.version} ${this.platform} (${name}; ${version})`
    return replaceHeaderControls(ua)
  }
}
