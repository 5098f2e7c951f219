/**
 * `JSON.parse` keeps the last of two equal keys; a verifier that must not be told two things
 * at once needs to know there were two. Scans the text of a JSON object (already parsed, so
 * known to be well formed) and compares its top-level keys after unescaping, so `"a"` and
 * `"\u0061"` are the same name.
 */
export function hasDuplicateTopLevelKey(objectText: string): boolean {
  const seen = new Set<string>()
  let depth = 0
  let expectKey = false
  for (let i = 0; i < objectText.length; i++) {
    const ch = objectText[i]
    if (ch === '"') {
      const start = i
      for (i++; i < objectText.length && objectText[i] !== '"'; i++) if (objectText[i] === '\\') i++
      if (depth === 1 && expectKey) {
        const key = JSON.parse(objectText.slice(start, i + 1)) as string
        if (seen.has(key)) return true
        seen.add(key)
        expectKey = false
      }
    } else if (ch === '{' || ch === '[') {
      depth++
      if (depth === 1) expectKey = true
    } else if (ch === '}' || ch === ']') depth--
    else if (ch === ',' && depth === 1) expectKey = true
  }
  return false
}
