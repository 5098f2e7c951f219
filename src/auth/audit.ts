import type { AuthModeName } from '../config/types.js'
import type { AppLogger } from '../log/logger.js'
import type { Principal } from './principal.js'

/** Where each upgrade decision is counted (the metrics), besides its line. */
export interface UpgradeCounter {
  upgrade(outcome: 'accepted' | 'degraded' | 'rejected', reason: string): void
}

/**
 * Every upgrade decision, wherever it is taken, goes through here: it writes its one `ws.auth`
 * line, so that a connection accepted, degraded or refused is always explained by one mode and
 * one reason (never the credential), and it is counted. Reasons are fixed wording, never a
 * value the client sent.
 */
export class UpgradeAudit {
  constructor(
    readonly mode: AuthModeName,
    private readonly counter: UpgradeCounter | null,
  ) {}

  rejected(log: AppLogger, reason: string, remote: string): void {
    logUpgradeRejected(log, this.mode, reason, remote)
    this.counter?.upgrade('rejected', reason)
  }

  admitted(log: AppLogger, remote: string, connectionId: string, principal: Principal, degradedReason: string | null): void {
    logUpgradeAdmitted(log, this.mode, remote, connectionId, principal, degradedReason)
    this.counter?.upgrade(degradedReason === null ? 'accepted' : 'degraded', degradedReason ?? 'ok')
  }
}

function logUpgradeRejected(log: AppLogger, mode: AuthModeName, reason: string, remote: string): void {
  log.info({ event: 'ws.auth', outcome: 'rejected', mode, reason, remote }, 'websocket upgrade rejected')
}

function logUpgradeAdmitted(
  log: AppLogger,
  mode: AuthModeName,
  remote: string,
  connectionId: string,
  principal: Principal,
  degradedReason: string | null,
): void {
  const line = { event: 'ws.auth', mode, connectionId, remote, principal: principal.kind, scopes: [...principal.scopes] }
  if (degradedReason !== null) {
    log.warn({ ...line, outcome: 'degraded', reason: degradedReason }, 'websocket connection admitted without a valid token')
  } else {
    log.info({ ...line, outcome: 'accepted' }, 'websocket connection accepted')
  }
}
