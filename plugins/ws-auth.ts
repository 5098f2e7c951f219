import fp from 'fastify-plugin'
import { UpgradeAudit } from '../src/auth/audit.js'
import { AuthPolicy, type AuthPolicyOptions } from '../src/auth/policy.js'

declare module 'fastify' {
  interface FastifyInstance {
    wsAuth: AuthPolicy
    /** Every upgrade decision's line and count. */
    upgradeAudit: UpgradeAudit
  }
}

/** Decorates the app with the upgrade auth policy built from `config.auth`, and the audit of its decisions. */
export default fp<AuthPolicyOptions>(
  async (app, opts) => {
    const policy = new AuthPolicy(app.config.auth, opts)
    app.decorate('wsAuth', policy)
    app.decorate('upgradeAudit', new UpgradeAudit(policy.mode, app.metrics))
  },
  { name: 'ws-auth', fastify: '5.x', decorators: { fastify: ['config', 'metrics'] } },
)
