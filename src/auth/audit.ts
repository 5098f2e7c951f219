import type { AuthModeName } from '../config/types.js'
import type { AppLogger } from '../log/logger.js'
import type { Principal } from './principal.js'

/**
 * The one `ws.auth` line every upgrade decision writes, so that a connection accepted,
 * degraded or refused is always explained by one mode and one reason. Never the credential.
 */
export function logUpgradeRejected(log: AppLogger, mode: AuthModeName, reason: string, remote: string): void {
  log.info({ event: 'ws.auth', outcome: 'rejected', mode, reason, remote }, 'websocket upgrade rejected')
}

export function logUpgradeAdmitted(
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
