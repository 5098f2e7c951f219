/**
 * Rate limits for a ChatGPT credential: the usage backend's answer, mapped to the
 * `account/rateLimits/read` result. A 401 means the backend refused the credential, which is
 * what starts the account service's recovery; every other failure is the backend client's own.
 *
 * Concurrent reads for the same credential share one backend request (each caller gets its
 * result or its error), so many clients polling at once — or a backend that stops answering —
 * cost one outbound request per credential, not one per call. The share is keyed by a digest
 * of the credential, never the token itself; a read after the shared one settled asks again.
 */
import { BackendHttpError, type BackendClient } from './backend-client.js'
import { CredentialRejected } from './errors.js'
import { mapUsage, type GetAccountRateLimitsResult } from './usage.js'
import { sha256 } from '../util/sha256.js'
import { SingleFlight } from '../util/single-flight.js'

export interface RateLimitsReader {
  read(auth: { accessToken: string; accountId: string | null }): Promise<GetAccountRateLimitsResult>
}

export function backendRateLimits(backend: BackendClient): RateLimitsReader {
  const reads = new SingleFlight<GetAccountRateLimitsResult>()
  return {
    read(auth) {
      return reads.run(credentialKey(auth), async () => {
        try {
          return mapUsage(await backend.fetchUsage(auth))
        } catch (err) {
          throw err instanceof BackendHttpError && err.status === 401 ? new CredentialRejected(err) : err
        }
      })
    },
  }
}

/** The same token with another account id is another credential (the backend sees both). */
function credentialKey(auth: { accessToken: string; accountId: string | null }): string {
  return sha256(JSON.stringify([auth.accessToken, auth.accountId])).toString('hex')
}
