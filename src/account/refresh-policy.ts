/** When a managed ChatGPT credential is refreshed before use. */

export const REFRESH_BEFORE_EXPIRY_MS = 5 * 60 * 1000
export const MAX_TOKEN_AGE_MS = 8 * 24 * 60 * 60 * 1000

/**
 * Proactive refresh: the access token expires within 5 minutes, or the last refresh is older
 * than 8 days (or unknown).
 */
export function needsProactiveRefresh(accessTokenExpSeconds: number | null, lastRefresh: Date | null, nowMs: number): boolean {
  if (accessTokenExpSeconds !== null && accessTokenExpSeconds * 1000 - nowMs <= REFRESH_BEFORE_EXPIRY_MS) return true
  if (lastRefresh === null) return true
  return nowMs - lastRefresh.getTime() > MAX_TOKEN_AGE_MS
}
