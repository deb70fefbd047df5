/** Display helpers: sizes, durations and dates (local time for people, UTC ISO for titles). */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** 1536 -> "1.5 KiB"; null -> "—". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null || !Number.isFinite(bytes) || bytes < 0) return '—'
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  if (unit === 0) return `${value} B`
  const digits = value < 10 ? 1 : 0
  return `${value.toFixed(digits)} ${UNITS[unit]}`
}

/** Milliseconds in words: "850 ms", "42 s", "3 min 5 s", "2 h 4 min". */
export function formatDuration(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms) || ms < 0) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  const seconds = Math.round(ms / 1000)
  if (seconds < 60) return `${seconds} s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) {
    const rest = seconds % 60
    return rest ? `${minutes} min ${rest} s` : `${minutes} min`
  }
  const hours = Math.floor(minutes / 60)
  const rest = minutes % 60
  return rest ? `${hours} h ${rest} min` : `${hours} h`
}

/** The time between two ISO timestamps, or "—" when either is missing. */
export function durationBetween(start: string | null | undefined, end: string | null | undefined): string {
  if (!start || !end) return '—'
  const ms = Date.parse(end) - Date.parse(start)
  return Number.isNaN(ms) ? '—' : formatDuration(ms)
}

export interface DateOptions {
  locale?: string
  timeZone?: string
}

/** An ISO timestamp in the viewer's local time (or the given zone), e.g. "15 Jan 2026, 13:00". */
export function formatDateTime(iso: string | null | undefined, options: DateOptions = {}): string {
  if (!iso) return '—'
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return iso
  return new Intl.DateTimeFormat(options.locale, {
    dateStyle: 'medium',
    timeStyle: 'short',
    timeZone: options.timeZone,
  }).format(date)
}

/** The same instant as a UTC ISO string, for a title attribute: "2026-01-15T12:00:00.000Z". */
export function utcIso(iso: string | null | undefined): string {
  if (!iso) return ''
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? iso : date.toISOString()
}

const STATUS_WORDS: Record<string, string> = { in_progress: 'in progress' }

/** API enum values in words: "in_progress" -> "in progress", "pre_restore" -> "pre-restore". */
export function statusLabel(status: string): string {
  return STATUS_WORDS[status] ?? status.replace(/_/g, '-')
}

/** The browser's IANA timezone, or UTC when it cannot tell. */
export function browserTimeZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'
  } catch {
    return 'UTC'
  }
}
