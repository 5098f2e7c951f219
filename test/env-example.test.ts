import { readFileSync } from 'node:fs'
import t from 'tap'
import { renderEnvExample } from '../src/config/env-example.js'
import { ENV_ONLY, envName, FLAGS } from '../src/config/flags.js'

// dist/test/… → the project root's .env.example
const text = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')

t.test('.env.example lists every setting with its default', async (t) => {
  for (const f of FLAGS) {
    t.ok(text.includes(`# ${envName(f.name)}=${f.defaultText ?? ''}\n`), `${envName(f.name)} listed`)
  }
  for (const e of ENV_ONLY) t.ok(text.includes(`# ${e.name}=${e.defaultText}\n`), `${e.name} listed`)
  const listed = [...text.matchAll(/^# ([A-Z0-9_]+)=/gm)].map((m) => m[1])
  t.equal(listed.length, FLAGS.length + ENV_ONLY.length, 'nothing stale is listed')
  t.equal(text, renderEnvExample(), 'the file is what `npm run env-example` writes')
})
