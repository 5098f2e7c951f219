/**
 * What the gateway answers the engine, on behalf of a client that may not approve (it lacks
 * `exec`), for each approval request. Each is the protocol's "no, carry on" answer, not its
 * "no, and stop the turn" one: the agent learns it may not, and the user can still steer.
 * - the v2 item approvals for commands and file changes decide `decline`;
 * - a permissions request is declined by granting nothing, for this turn only;
 * - the legacy `applyPatchApproval` / `execCommandApproval` take a review decision: `denied`;
 * - codex also asks some approvals as an MCP elicitation (`mcpServer/elicitation/request`):
 *   an MCP tool call (`mcp_tool_call`), a tool suggestion, each marked by
 *   `params._meta.codex_approval_kind`. Any marked one is an approval, whatever its kind (a new
 *   kind fails closed), and is declined as MCP declines: `{action: "decline", content: null}`.
 *   An unmarked elicitation is an MCP server asking the person for input, not an approval.
 */
import { isJsonObject } from '../util/json.js'
import { APPROVAL_REQUEST_METHODS } from './scopes.js'

const DECLINES: ReadonlyMap<string, unknown> = new Map<string, unknown>([
  ['item/commandExecution/requestApproval', { decision: 'decline' }],
  ['item/fileChange/requestApproval', { decision: 'decline' }],
  ['item/permissions/requestApproval', { permissions: {}, scope: 'turn' }],
  ['applyPatchApproval', { decision: 'denied' }],
  ['execCommandApproval', { decision: 'denied' }],
])

for (const method of APPROVAL_REQUEST_METHODS) {
  if (!DECLINES.has(method)) throw new Error(`no decline answer for approval request ${method}`)
}

/** The declining result for an approval request method, or undefined for any other method. */
export function declineResult(method: string): unknown {
  return DECLINES.get(method)
}

const ELICITATION_METHOD = 'mcpServer/elicitation/request'
const ELICITATION_DECLINE = { action: 'decline', content: null }

/**
 * The declining result when an engine request with these `method` and `params` asks for an
 * approval (see the header), or undefined when it does not.
 */
export function approvalDecline(method: string, params: unknown): unknown {
  const decline = DECLINES.get(method)
  if (decline !== undefined) return decline
  return method === ELICITATION_METHOD && marksApproval(params) ? ELICITATION_DECLINE : undefined
}

function marksApproval(params: unknown): boolean {
  const meta = isJsonObject(params) ? params._meta : undefined
  return isJsonObject(meta) && meta.codex_approval_kind !== undefined && meta.codex_approval_kind !== null
}
