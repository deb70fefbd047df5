import { QueryClient, QueryClientProvider } from '@tanstack/react-query'
import { render } from '@testing-library/react'
import type { ReactElement } from 'react'
import { vi } from 'vitest'
import type { Backup } from './api/client'

type Handler = (request: Request, url: URL) => Response | Promise<Response>

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
}

export function problem(status: number, detail: string, error = 'Error'): Response {
  return json({ error, detail }, status)
}

/**
 * Stub the network: `routes` maps "METHOD /path" to a handler. Unknown requests fail the test
 * loudly with a 599. Returns the fetch mock, whose calls hold the Requests.
 */
export function mockApi(routes: Record<string, Handler>) {
  const fetchMock = vi.fn(async (input: RequestInfo | URL) => {
    const request = input instanceof Request ? input : new Request(input)
    const url = new URL(request.url)
    const handler = routes[`${request.method} ${url.pathname}`]
    if (!handler) return problem(599, `no stub for ${request.method} ${url.pathname}`)
    return handler(request, url)
  })
  vi.stubGlobal('fetch', fetchMock)
  return fetchMock
}

/** The Requests sent to one "METHOD /path". */
export function requestsTo(fetchMock: ReturnType<typeof mockApi>, route: string): Request[] {
  return fetchMock.mock.calls
    .map(([input]) => input as Request)
    .filter((request) => `${request.method} ${new URL(request.url).pathname}` === route)
}

export function renderWithClient(ui: ReactElement) {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })
  return { client, ...render(<QueryClientProvider client={client}>{ui}</QueryClientProvider>) }
}

export function backup(fields: Partial<Backup> = {}): Backup {
  return {
    id: 'b1',
    name: 'nightly-1',
    description: null,
    type: 'manual',
    status: 'completed',
    filePath: '/backups/nightly-1.tar.zst',
    fileSize: 1536,
    checksum: 'abc',
    compression: 'zstd',
    cloudPath: null,
    cloudProvider: null,
    isCloudSynced: false,
    syncRequested: false,
    syncStatus: 'none',
    syncError: null,
    syncAttempts: 0,
    nextSyncAt: null,
    syncedAt: null,
    tableCount: 3,
    recordCount: 10,
    uploadedFilesCount: 2,
    appVersion: '1.0.0',
    schemaVersion: '1',
    errorMessage: null,
    scheduleId: null,
    createdBy: 'admin@example.com',
    startedAt: '2026-01-15T12:00:00Z',
    completedAt: '2026-01-15T12:00:42Z',
    createdAt: '2026-01-15T12:00:00Z',
    deletedAt: null,
    progress: null,
    ...fields,
  }
}

export function backupList(items: Backup[]) {
  return { items, total: items.length, limit: 10, offset: 0 }
}

export const notConfigured = {
  configured: false,
  provider: null,
  bucket: null,
  endpointHost: null,
  region: null,
  prefix: null,
  lastSuccessfulSyncAt: null,
  pendingSyncs: 0,
  lastSyncError: null,
}
