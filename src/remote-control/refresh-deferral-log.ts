/**
 * The log line for a deferred server-token refresh. A transient failure (no answer, 429, 5xx)
 * postpones the next refresh; without this line an operator would see remote control go quiet
 * with no reason. The reason is the error's message, scrubbed and cut short: the enrollment
 * client builds those messages without tokens, and the scrub is the last line should one slip.
 */
import type { AppLogger } from '../log/logger.js'
import { shortReason } from '../log/scrub.js'
import type { ServerTokenCacheOptions } from './token-cache.js'

type DeferralListener = NonNullable<ServerTokenCacheOptions['onDeferred']>

/** One warning per deferral: whether the refresh was required, when it is retried, and why. */
export function logRefreshDeferrals(log: AppLogger): DeferralListener {
  return ({ required, error, retryAt }) => {
    log.warn(
      { event: 'remote_control.refresh_deferred', required, retryAt: new Date(retryAt).toISOString(), reason: shortReason(error) },
      'remote control server token refresh deferred after a transient failure',
    )
  }
}
