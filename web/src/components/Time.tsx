import { formatDateTime, utcIso } from '../format'

/** A timestamp in local time, with the UTC ISO time in its title. */
export function Time({ value, empty = '—' }: { value: string | null | undefined; empty?: string }) {
  if (!value) return <span>{empty}</span>
  return (
    <time dateTime={utcIso(value)} title={utcIso(value)}>
      {formatDateTime(value)}
    </time>
  )
}
