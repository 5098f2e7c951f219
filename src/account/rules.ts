import { RpcError } from '../rpc/errors.js'

/** Login restrictions an administrator sets (codex's `forced_login_method`, `forced_chatgpt_workspace_id`). */
export interface LoginRules {
  readonly forcedLoginMethod: 'chatgpt' | 'api' | null
  /** Allowed ChatGPT workspace ids, or null for any. */
  readonly forcedWorkspaceIds: readonly string[] | null
}

export const EXTERNAL_AUTH_ACTIVE =
  'External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it.'

export function checkApiKeyLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'chatgpt') throw RpcError.invalidRequest('API key login is disabled. Use ChatGPT login instead.')
}

export function checkChatgptLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'api') throw RpcError.invalidRequest('ChatGPT login is disabled. Use API key login instead.')
}

export function checkExternalLoginAllowed(rules: LoginRules): void {
  if (rules.forcedLoginMethod === 'api') throw RpcError.invalidRequest('External ChatGPT auth is disabled. Use API key login instead.')
}

/** The workspace rule for tokens handed in by a parent app, with codex's wording. */
export function workspaceViolation(rules: LoginRules, accountId: string): string | null {
  const allowed = rules.forcedWorkspaceIds
  if (allowed === null || allowed.includes(accountId)) return null
  return `External auth must use one of workspace(s) [${allowed.map((a) => JSON.stringify(a)).join(', ')}], but received ${JSON.stringify(accountId)}.`
}
