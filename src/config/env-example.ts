import { ENV_ONLY, envName, FLAGS } from './flags.js'

/** The text of `.env.example`, generated from the flag table (`npm run env-example`). */
export function renderEnvExample(): string {
  const out = [
    '# app-server settings. Every flag has an environment twin; flags win over the environment,',
    '# and the environment wins over this file (copy it to .env to use it). Defaults shown.',
    '',
  ]
  for (const f of FLAGS) out.push(`# --${f.name}: ${f.help}`, `# ${envName(f.name)}=${f.defaultText ?? ''}`, '')
  for (const e of ENV_ONLY) out.push(`# ${e.help}`, `# ${e.name}=${e.defaultText}`, '')
  return out.join('\n')
}
