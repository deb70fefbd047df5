import { useQuery, type QueryClient } from '@tanstack/react-query'
import { api, unwrap } from './client'

/** Cloud storage status; several sections need to know whether it is configured. */
export function useStorage() {
  return useQuery({ queryKey: ['storage'], queryFn: () => unwrap(api.GET('/storage')) })
}

/** After a change: the history, storage counters and the audit trail are stale. */
export function refreshAfterChange(queryClient: QueryClient, ...extra: string[]): void {
  for (const key of ['backups', 'storage', 'audit', ...extra]) {
    void queryClient.invalidateQueries({ queryKey: [key] })
  }
}
