/**
 * Rate limits for a ChatGPT credential: the usage backend's answer, mapped to the
 * `account/rateLimits/read` result. A 401 means the backend refused the credential, which is
 * what starts the account service's recovery; every other failure is the backend client's own.
 */
import { BackendHttpError, type BackendClient } from './backend-client.js'
import { CredentialRejected } from './errors.js'
import { mapUsage, type GetAccountRateLimitsResult } from './usage.js'

export interface RateLimitsReader {
  read(auth: { accessToken: string; accountId: string | null }): Promise<GetAccountRateLimitsResult>
}

export function backendRateLimits(backend: BackendClient): RateLimitsReader {
  return {
    async read(auth) {
      try {
        return mapUsage(await backend.fetchUsage(auth))
      } catch (err) {
        throw err instanceof BackendHttpError && err.status === 401 ? new CredentialRejected(err) : err
      }
    },
  }
}
