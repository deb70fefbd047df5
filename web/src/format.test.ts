import { describe, expect, it } from 'vitest'
import { durationBetween, formatBytes, formatDateTime, formatDuration, statusLabel, utcIso } from './format'

describe('formatBytes', () => {
  it('shows bytes below 1 KiB as bytes', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1023)).toBe('1023 B')
  })
  it('uses binary units with one decimal below 10', () => {
    expect(formatBytes(1536)).toBe('1.5 KiB')
    expect(formatBytes(5 * 1024 * 1024)).toBe('5.0 MiB')
    expect(formatBytes(123 * 1024 ** 3)).toBe('123 GiB')
  })
  it('shows a dash for unknown sizes', () => {
    expect(formatBytes(null)).toBe('—')
    expect(formatBytes(undefined)).toBe('—')
    expect(formatBytes(-1)).toBe('—')
  })
})

describe('formatDuration', () => {
  it('picks the unit that reads best', () => {
    expect(formatDuration(850)).toBe('850 ms')
    expect(formatDuration(42_000)).toBe('42 s')
    expect(formatDuration(185_000)).toBe('3 min 5 s')
    expect(formatDuration(120_000)).toBe('2 min')
    expect(formatDuration(2 * 3600_000 + 4 * 60_000)).toBe('2 h 4 min')
  })
  it('measures between two ISO timestamps and tolerates missing ends', () => {
    expect(durationBetween('2026-01-15T12:00:00Z', '2026-01-15T12:00:42Z')).toBe('42 s')
    expect(durationBetween('2026-01-15T12:00:00Z', null)).toBe('—')
  })
})

describe('dates', () => {
  it('shows the instant in the local zone', () => {
    expect(formatDateTime('2026-01-15T12:00:00Z', { locale: 'en-GB', timeZone: 'Asia/Tokyo' })).toBe('15 Jan 2026, 21:00')
    expect(formatDateTime('2026-01-15T12:00:00Z', { locale: 'en-GB', timeZone: 'America/New_York' })).toBe(
      '15 Jan 2026, 07:00',
    )
  })
  it('gives the same instant as UTC ISO for titles, whatever offset the server used', () => {
    expect(utcIso('2026-01-15T12:00:00Z')).toBe('2026-01-15T12:00:00.000Z')
    expect(utcIso('2026-01-15T14:00:00+02:00')).toBe('2026-01-15T12:00:00.000Z')
  })
  it('shows a dash when there is no date', () => {
    expect(formatDateTime(null)).toBe('—')
    expect(utcIso(null)).toBe('')
  })
})

describe('statusLabel', () => {
  it('turns API enum values into words', () => {
    expect(statusLabel('in_progress')).toBe('in progress')
    expect(statusLabel('pre_restore')).toBe('pre-restore')
    expect(statusLabel('completed')).toBe('completed')
  })
})
