/**
 * What the gateway answers the engine, on behalf of a client that may not approve (it lacks
 * `exec`), for each approval request. Each is the protocol's "no, carry on" answer, not its
 * "no, and stop the turn" one: the agent learns it may not, and the user can still steer.
 * - the v2 item approvals for commands and file changes decide `decline`;
 * - a permissions request is declined by granting nothing, for this turn only;
 * - the legacy `applyPatchApproval` / `execCommandApproval` take a review decision: `denied`.
 */
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
