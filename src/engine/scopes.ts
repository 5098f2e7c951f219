/**
 * Which scope each JSON-RPC method of the codex protocol needs (connection authority is not
 * execution authority, for every method). The dispatcher checks it before a request is
 * answered by the gateway or forwarded to the engine.
 *
 * Policy:
 * - looking at threads, models and apps needs `thread:read`; acting on threads and turns needs
 *   `thread:write`;
 * - files: `fs:read` / `fs:write`; running anything outside a turn's own approval flow, and
 *   answering approval requests, needs `exec`;
 * - configuration (config values, plugins, marketplaces, MCP servers, model providers, skills
 *   config, experimental features): reads need `config:read`, changes `config:write`;
 * - a method this table does not know (a newer engine) needs EVERY scope: an engine upgrade
 *   cannot slip a method past the table to a narrowly scoped token.
 *
 * The table covers every method of codex 0.169.0's non-experimental protocol (a test checks it
 * against the installed engine) plus the remote-control methods the gateway owns.
 */
import type { Scope } from '../auth/principal.js'

const METHOD_SCOPES: ReadonlyMap<string, Scope> = new Map<string, Scope>([
  // The handshake: anyone who passed the upgrade check may initialize.
  ['initialize', 'session'],

  // Threads: looking.
  ['thread/list', 'thread:read'],
  ['thread/read', 'thread:read'],
  ['thread/loaded/list', 'thread:read'],
  ['thread/turns/list', 'thread:read'],
  ['thread/items/list', 'thread:read'],
  ['thread/goal/get', 'thread:read'],
  ['thread/attachment/list', 'thread:read'],
  ['thread/attachmentOwner/list', 'thread:read'],
  ['threadSection/list', 'thread:read'],
  // Stops this connection's event stream: whoever may watch a thread may stop watching it.
  ['thread/unsubscribe', 'thread:read'],
  // What a chat client lists to pick from; nothing is changed.
  ['model/list', 'thread:read'],
  ['skills/list', 'thread:read'],
  ['app/list', 'thread:read'],
  ['app/read', 'thread:read'],
  ['app/installed', 'thread:read'],
  // Reads a resource through the user's MCP servers, as a turn's tools could; no side effects
  // by MCP's contract (tool calls, which have them, need `exec`).
  ['mcpServer/resource/read', 'thread:read'],

  // Threads and turns: acting.
  ['thread/start', 'thread:write'],
  ['thread/resume', 'thread:write'],
  ['thread/fork', 'thread:write'],
  ['thread/archive', 'thread:write'],
  ['thread/unarchive', 'thread:write'],
  ['thread/delete', 'thread:write'],
  ['thread/name/set', 'thread:write'],
  ['thread/goal/set', 'thread:write'],
  ['thread/goal/clear', 'thread:write'],
  ['thread/metadata/update', 'thread:write'],
  ['thread/attachment/add', 'thread:write'],
  ['thread/attachment/remove', 'thread:write'],
  ['thread/section/move', 'thread:write'],
  ['thread/compact/start', 'thread:write'],
  ['thread/revert', 'thread:write'],
  ['thread/inject_items', 'thread:write'],
  ['threadSection/create', 'thread:write'],
  ['threadSection/update', 'thread:write'],
  ['threadSection/delete', 'thread:write'],
  ['turn/start', 'thread:write'],
  ['turn/steer', 'thread:write'],
  ['turn/interrupt', 'thread:write'],
  ['review/start', 'thread:write'],

  // Files.
  ['fs/readFile', 'fs:read'],
  ['fs/readDirectory', 'fs:read'],
  ['fs/getMetadata', 'fs:read'],
  ['fs/watch', 'fs:read'],
  ['fs/unwatch', 'fs:read'],
  ['fuzzyFileSearch', 'fs:read'],
  ['fs/writeFile', 'fs:write'],
  ['fs/createDirectory', 'fs:write'],
  ['fs/remove', 'fs:write'],
  ['fs/copy', 'fs:write'],

  // Running things. A guardian-denied action approved is an approval like any other; an MCP
  // tool call runs whatever the tool does, outside any turn's approval policy.
  ['command/exec', 'exec'],
  ['command/exec/write', 'exec'],
  ['command/exec/terminate', 'exec'],
  ['command/exec/resize', 'exec'],
  ['thread/shellCommand', 'exec'],
  ['thread/approveGuardianDeniedAction', 'exec'],
  ['mcpServer/tool/call', 'exec'],

  // Configuration: reads.
  ['config/read', 'config:read'],
  ['configRequirements/read', 'config:read'],
  ['hooks/list', 'config:read'],
  ['plugin/list', 'config:read'],
  ['plugin/installed', 'config:read'],
  ['plugin/read', 'config:read'],
  ['plugin/skill/read', 'config:read'],
  ['plugin/share/list', 'config:read'],
  ['modelProvider/list', 'config:read'],
  ['modelProvider/capabilities/read', 'config:read'],
  ['experimentalFeature/list', 'config:read'],
  ['permissionProfile/list', 'config:read'],
  ['mcpServerStatus/list', 'config:read'],
  ['externalAgentConfig/detect', 'config:read'],
  ['externalAgentConfig/import/readHistories', 'config:read'],
  ['windowsSandbox/readiness', 'config:read'],

  // Configuration: changes. Installing a plugin or an MCP server's login adds code or
  // credentials the engine will use; the Windows sandbox set-up changes the machine.
  ['config/value/write', 'config:write'],
  ['config/batchWrite', 'config:write'],
  ['config/mcpServer/reload', 'config:write'],
  ['mcpServer/oauth/login', 'config:write'],
  ['skills/config/write', 'config:write'],
  ['skills/extraRoots/set', 'config:write'],
  ['marketplace/add', 'config:write'],
  ['marketplace/remove', 'config:write'],
  ['marketplace/upgrade', 'config:write'],
  ['plugin/install', 'config:write'],
  ['plugin/uninstall', 'config:write'],
  ['plugin/reconcile', 'config:write'],
  ['plugin/share/save', 'config:write'],
  ['plugin/share/updateTargets', 'config:write'],
  ['plugin/share/checkout', 'config:write'],
  ['plugin/share/delete', 'config:write'],
  ['modelProvider/config/write', 'config:write'],
  ['experimentalFeature/enablement/set', 'config:write'],
  ['externalAgentConfig/import', 'config:write'],
  ['externalAgentConfig/import/recordHistory', 'config:write'],
  ['windowsSandbox/setupStart', 'config:write'],

  // Accounts the gateway answers itself (scopes as in src/account/methods.ts).
  ['account/read', 'account:read'],
  ['account/rateLimits/read', 'account:read'],
  ['account/login/start', 'account:write'],
  ['account/login/cancel', 'account:write'],
  ['account/logout', 'account:write'],

  // The engine's own account methods (forwarded). They read or act on the same account as the
  // gateway's, so they carry the same authority as the gateway's account methods: reads need
  // `account:read`; anything that logs in, spends or sends in the account's name `account:write`.
  ['account/gatewayOAuth/read', 'account:read'],
  ['account/securitySetup/read', 'account:read'],
  ['account/usage/read', 'account:read'],
  ['account/workspaceMessages/read', 'account:read'],
  ['account/gatewayOAuth/login', 'account:write'],
  ['account/gatewayOAuth/cancel', 'account:write'],
  ['account/rateLimitResetCredit/consume', 'account:write'],
  ['account/sendAddCreditsNudgeEmail', 'account:write'],

  // Feedback bundles the engine's logs with any `extraLogFiles` the caller names: uploading
  // reads those files and sends them off the machine, so it needs what reading them needs;
  // saving writes the bundle to a caller-chosen path.
  ['feedback/upload', 'fs:read'],
  ['feedback/save', 'fs:write'],

  // Remote control, owned by the gateway (scopes as in src/remote-control/methods.ts).
  ['remoteControl/enable', 'remote:write'],
  ['remoteControl/disable', 'remote:write'],
  ['remoteControl/status/read', 'account:read'],
])

/** The scope `method` needs; 'ALL' (every scope) for a method the table does not know. */
export function scopeOf(method: string): Scope | 'ALL' {
  return METHOD_SCOPES.get(method) ?? 'ALL'
}

/**
 * The scope a client notification for `method` needs: `initialized` (codex 0.169.0's one client
 * notification) needs `session`; any other name is judged as a request for it would be.
 */
export function notificationScopeOf(method: string): Scope | 'ALL' {
  return method === 'initialized' ? 'session' : scopeOf(method)
}

/** Every method the table classifies. */
export function classifiedMethods(): IterableIterator<string> {
  return METHOD_SCOPES.keys()
}

/** Methods the gateway answers itself; every other request is forwarded to the engine. */
export const GATEWAY_OWNED_METHODS: ReadonlySet<string> = new Set([
  'initialize',
  'account/read',
  'account/login/start',
  'account/login/cancel',
  'account/logout',
  'account/rateLimits/read',
  'remoteControl/enable',
  'remoteControl/disable',
  'remoteControl/status/read',
])

/**
 * Engine→client requests that ask a person to approve an action. Only a connection holding
 * `exec` sees them; for any other the gateway declines on its behalf (a token that may chat
 * can never approve a command). Codex asks some approvals as marked MCP elicitations too:
 * approval-decline.ts knows them by their params.
 */
export const APPROVAL_REQUEST_METHODS: ReadonlySet<string> = new Set([
  'item/commandExecution/requestApproval',
  'item/fileChange/requestApproval',
  'item/permissions/requestApproval',
  'applyPatchApproval',
  'execCommandApproval',
])
