/**
 * Reading single headers of a backend's answer for an error message: the request id the
 * backend's operators search by, `cf-ray`, and nothing that could forge a log line.
 */

/** Response headers as fetch (`Headers`) or node's http / ws (`IncomingHttpHeaders`) give them. */
export type HeaderSource = Headers | Readonly<Record<string, string | string[] | number | undefined>>

/** One header, case-insensitively, first value if repeated; non-printable characters become `?`. */
export function headerValue(headers: HeaderSource, name: string): string | null {
  let value: string | string[] | number | undefined | null
  if (headers instanceof Headers) value = headers.get(name)
  else {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name)
    value = key === undefined ? undefined : headers[key]
  }
  if (Array.isArray(value)) value = value[0]
  if (value === undefined || value === null) return null
  // A header value ends up in logs: no control characters that could forge log lines.
  return String(value).replace(/[^\x20-\x7e]/g, '?')
}

/** `x-request-id`, else `x-oai-request-id`. */
export function requestIdOf(headers: HeaderSource): string | null {
  return headerValue(headers, 'x-request-id') ?? headerValue(headers, 'x-oai-request-id')
}
