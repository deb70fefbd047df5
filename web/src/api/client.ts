import createClient, { type Middleware } from 'openapi-fetch'
import type { components, paths } from './schema'

export type Schemas = components['schemas']
export type Backup = Schemas['BackupOut']
export type Schedule = Schemas['ScheduleOut']
export type Me = Schemas['MeOut']

/** An API failure with the server's `detail` (or what went wrong on the way). */
export class ApiError extends Error {
  readonly status: number
  constructor(status: number, detail: string) {
    super(detail)
    this.name = 'ApiError'
    this.status = status
  }
}

let csrfToken: string | null = null
let onUnauthorized: () => void = () => {}

/** Remember the session's CSRF token (from /auth/login or /auth/me); null forgets it. */
export function setCsrfToken(token: string | null | undefined): void {
  csrfToken = token ?? null
}

/** What to do when the server answers 401 (the session ended): show the login page. */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler
}

const CHANGES = new Set(['POST', 'PATCH', 'PUT', 'DELETE'])

const session: Middleware = {
  onRequest({ request }) {
    if (csrfToken && CHANGES.has(request.method)) {
      request.headers.set('X-CSRF-Token', csrfToken)
    }
    return request
  },
  onResponse({ request, response }) {
    // A wrong password on /auth/login is a 401 too: that one is the form's business.
    if (response.status === 401 && !new URL(request.url).pathname.endsWith('/auth/login')) {
      onUnauthorized()
    }
    return response
  },
}

export const api = createClient<paths>({
  baseUrl: '',
  credentials: 'same-origin',
  // Looked up on each call, so tests can stub the global fetch.
  fetch: (request) => globalThis.fetch(request),
})
api.use(session)

/** The server's explanation from an error body: {error, detail} or FastAPI's validation list. */
export function errorDetail(body: unknown, status: number): string {
  if (body && typeof body === 'object' && 'detail' in body) {
    const detail = (body as { detail: unknown }).detail
    if (typeof detail === 'string' && detail) return detail
    if (Array.isArray(detail)) {
      const parts = detail
        .map((item) => (item && typeof item === 'object' && 'msg' in item ? String(item.msg) : ''))
        .filter(Boolean)
      if (parts.length) return parts.join('; ')
    }
  }
  if (typeof body === 'string' && body.trim() && body.length < 300) return body.trim()
  return `the server answered ${status}`
}

type Result<T> = { data?: T; error?: unknown; response: Response }

/** The data of an openapi-fetch call, or an ApiError carrying the server's detail. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  let result: Result<T>
  try {
    result = await call
  } catch (error) {
    if (error instanceof DOMException && error.name === 'AbortError') throw error
    throw new ApiError(0, 'cannot reach the server: check your connection and try again')
  }
  if (!result.response.ok) {
    throw new ApiError(result.response.status, errorDetail(result.error, result.response.status))
  }
  return result.data as T
}

/** The message to show for any error thrown by a query or mutation. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
}
