import { LoginRuleViolation } from './errors.js'
import type { Credential } from './types.js'

/** Login restrictions an administrator sets (codex's `forced_login_method`, `forced_chatgpt_workspace_id`). */
export interface LoginRules {
  readonly forcedLoginMethod: 'chatgpt' | 'api' | null
  /** Allowed ChatGPT workspace ids, or null for any. */
  readonly forcedWorkspaceIds: readonly string[] | null
}

export const EXTERNAL_AUTH_ACTIVE =
  'External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it.'

/** A parent app's tokens are replaced only by new ones from it, or cleared by a logout. */
export function checkNotExternallyManaged(current: Credential | null): void {
  if (current?.kind === 'chatgptExternal') throw new LoginRuleViolation(EXTERNAL_AUTH_ACTIVE)
}

export function checkApiKeyLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'chatgpt') throw new LoginRuleViolation('API key login is disabled. Use ChatGPT login instead.')
}

export function checkChatgptLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'api') throw new LoginRuleViolation('ChatGPT login is disabled. Use API key login instead.')
}

export function checkExternalLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'api') throw new LoginRuleViolation('External ChatGPT auth is disabled. Use API key login instead.')
}

/** The workspace rule for tokens handed in by a parent app, with codex's wording. */
export function checkExternalWorkspaceAllowed(rules: LoginRules, accountId: string): void {
  const allowed = rules.forcedWorkspaceIds
  if (allowed === null || allowed.includes(accountId)) return
  throw new LoginRuleViolation(
    `External auth must use one of workspace(s) [${allowed.map((a) => JSON.stringify(a)).join(', ')}], but received ${JSON.stringify(accountId)}.`,
  )
}
