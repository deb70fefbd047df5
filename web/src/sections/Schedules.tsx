import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { useEffect, useState, type FormEvent } from 'react'
import { api, messageOf, unwrap, type Schedule } from '../api/client'
import { useStorage } from '../api/queries'
import { ConfirmDelete } from '../components/ConfirmDelete'
import { Dialog } from '../components/Dialog'
import { Time } from '../components/Time'
import { browserTimeZone } from '../format'

export const PRESETS = [
  { label: 'Daily 2 AM', cron: '0 2 * * *' },
  { label: 'Weekly Sunday', cron: '0 0 * * 0' },
  { label: 'Weekdays 3:30', cron: '30 3 * * 1-5' },
  { label: 'Every 6 hours', cron: '0 */6 * * *' },
] as const

/** The cron schedules: list, enable/disable, edit, delete, and the form with a live preview. */
export function Schedules() {
  const queryClient = useQueryClient()
  // null: no form; 'new': a new schedule; else the schedule being edited.
  const [editing, setEditing] = useState<Schedule | 'new' | null>(null)
  const [deleting, setDeleting] = useState<Schedule | null>(null)
  const [toggleError, setToggleError] = useState<string | null>(null)

  const schedules = useQuery({ queryKey: ['schedules'], queryFn: () => unwrap(api.GET('/schedules')) })
  const refresh = () => {
    void queryClient.invalidateQueries({ queryKey: ['schedules'] })
    void queryClient.invalidateQueries({ queryKey: ['audit'] })
  }

  const toggle = useMutation({
    mutationFn: (schedule: Schedule) =>
      unwrap(api.POST('/schedules/{schedule_id}/toggle', { params: { path: { schedule_id: schedule.id } } })),
    onMutate: () => setToggleError(null),
    onSuccess: (updated) => {
      queryClient.setQueryData<Schedule[]>(['schedules'], (list) =>
        list?.map((item) => (item.id === updated.id ? updated : item)),
      )
      refresh()
    },
    onError: (error, schedule) => setToggleError(`Cannot switch ${schedule.name}: ${messageOf(error)}`),
  })

  return (
    <section aria-labelledby="schedules-title" className="card">
      <h2 id="schedules-title">Scheduled Backups</h2>
      {toggleError && (
        <p role="alert" className="error">
          {toggleError}
        </p>
      )}
      {schedules.isPending ? (
        <p role="status">Loading schedules…</p>
      ) : schedules.isError ? (
        <p role="alert" className="error">
          Cannot load the schedules: {messageOf(schedules.error)}
        </p>
      ) : schedules.data.length === 0 ? (
        <p className="empty">No schedules yet</p>
      ) : (
        <ul className="schedules">
          {schedules.data.map((schedule) => (
            <li key={schedule.id} className="schedule">
              <div className="schedule-head">
                <h3>{schedule.name}</h3>
                <label className="switch">
                  <input
                    type="checkbox"
                    role="switch"
                    aria-label={`Enabled ${schedule.name}`}
                    checked={schedule.isEnabled}
                    disabled={toggle.isPending && toggle.variables?.id === schedule.id}
                    onChange={() => toggle.mutate(schedule)}
                  />
                  <span aria-hidden="true">{schedule.isEnabled ? 'On' : 'Off'}</span>
                </label>
              </div>
              <p>
                {schedule.description} <code>{schedule.cronExpression}</code>
              </p>
              <dl className="facts">
                <dt>Timezone</dt>
                <dd>{schedule.timezone}</dd>
                <dt>Next run</dt>
                <dd>{schedule.isEnabled ? <Time value={schedule.nextRunAt} /> : 'disabled'}</dd>
                <dt>Last run</dt>
                <dd>
                  <Time value={schedule.lastRunAt} empty="never" />
                </dd>
                <dt>Runs</dt>
                <dd>
                  {schedule.successCount} succeeded, {schedule.failureCount} failed
                </dd>
                <dt>Keeps</dt>
                <dd>{schedule.retentionDays ? `${schedule.retentionDays} days` : 'all backups'}</dd>
                <dt>Cloud</dt>
                <dd>{schedule.syncToCloud ? 'sync to cloud' : 'local only'}</dd>
              </dl>
              <div className="buttons">
                <button type="button" aria-label={`Edit ${schedule.name}`} onClick={() => setEditing(schedule)}>
                  Edit
                </button>
                <button
                  type="button"
                  className="danger"
                  aria-label={`Delete ${schedule.name}`}
                  onClick={() => setDeleting(schedule)}
                >
                  Delete
                </button>
              </div>
            </li>
          ))}
        </ul>
      )}
      <button type="button" className="primary" onClick={() => setEditing('new')}>
        New schedule
      </button>
      {editing !== null && (
        <Dialog title="Schedule" onClose={() => setEditing(null)}>
          <ScheduleForm
            key={editing === 'new' ? 'new' : editing.id}
            schedule={editing === 'new' ? null : editing}
            onCancel={() => setEditing(null)}
            onSaved={() => {
              refresh()
              setEditing(null)
            }}
          />
        </Dialog>
      )}
      {deleting && (
        <DeleteScheduleDialog
          schedule={deleting}
          onClose={() => setDeleting(null)}
          onDeleted={() => {
            setDeleting(null)
            refresh()
          }}
        />
      )}
    </section>
  )
}

/** `value`, once it has stopped changing for `ms`. */
function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value)
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms)
    return () => clearTimeout(timer)
  }, [value, ms])
  return settled
}

function timeZones(): string[] {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : []
  return zones.includes('UTC') ? zones : ['UTC', ...zones]
}

interface FormProps {
  schedule: Schedule | null
  onCancel: () => void
  onSaved: () => void
}

/** New or edit (shown in the "Schedule" dialog): name, cron with presets and a preview of the
 * next runs, timezone, retention, cloud sync. */
export function ScheduleForm({ schedule, onCancel, onSaved }: FormProps) {
  const storage = useStorage()
  const [name, setName] = useState(schedule?.name ?? '')
  const [cron, setCron] = useState(schedule?.cronExpression ?? '')
  const [timezone, setTimezone] = useState(schedule?.timezone ?? browserTimeZone())
  const [retention, setRetention] = useState(schedule?.retentionDays ? String(schedule.retentionDays) : '')
  const [syncToCloud, setSyncToCloud] = useState(schedule?.syncToCloud ?? false)
  const [zones] = useState(timeZones)

  // Ask the server only once the typing pauses (~300 ms).
  const settled = useDebounced(JSON.stringify([cron.trim(), timezone.trim() || 'UTC']), 300)
  const [previewCron, previewZone] = JSON.parse(settled) as [string, string]
  const preview = { cron: previewCron, timezone: previewZone }
  const previewQuery = useQuery({
    queryKey: ['schedule-preview', preview.cron, preview.timezone],
    queryFn: () =>
      unwrap(api.GET('/schedules/preview', { params: { query: { cron: preview.cron, timezone: preview.timezone } } })),
    enabled: preview.cron !== '',
    retry: false,
    staleTime: 60_000,
  })

  const save = useMutation({
    mutationFn: async () => {
      const days = retention.trim() === '' ? null : Number(retention)
      const fields = {
        name: name.trim(),
        cronExpression: cron.trim(),
        timezone: timezone.trim() || 'UTC',
        syncToCloud,
      }
      if (schedule) {
        return unwrap(
          api.PATCH('/schedules/{schedule_id}', {
            params: { path: { schedule_id: schedule.id } },
            // 0 keeps every backup.
            body: { ...fields, retentionDays: days ?? 0 },
          }),
        )
      }
      return unwrap(api.POST('/schedules', { body: { ...fields, isEnabled: true, retentionDays: days } }))
    },
    onSuccess: onSaved,
  })

  function submit(event: FormEvent) {
    event.preventDefault()
    save.mutate()
  }

  const configured = storage.data?.configured === true
  const canSync = configured || syncToCloud
  const previewing = cron.trim() !== ''
  return (
    <form className="stack" onSubmit={submit} noValidate>
      <p className="muted">{schedule ? `Changing ${schedule.name}; its next run is computed again.` : 'A new schedule, enabled once saved.'}</p>
      <div className="field">
        <label htmlFor="schedule-name">Schedule name</label>
        <input
          id="schedule-name"
          value={name}
          maxLength={200}
          autoComplete="off"
          onChange={(event) => setName(event.target.value)}
        />
      </div>
      <div className="field">
        <label htmlFor="schedule-cron">Cron expression</label>
        <input
          id="schedule-cron"
          className="mono"
          value={cron}
          maxLength={200}
          autoComplete="off"
          spellCheck={false}
          placeholder="minute hour day month weekday"
          aria-describedby="schedule-cron-hint"
          onChange={(event) => setCron(event.target.value)}
        />
        <p id="schedule-cron-hint" className="hint">
          Five fields: minute, hour, day of month, month, day of week.
        </p>
        <div className="buttons presets" role="group" aria-label="Presets">
          {PRESETS.map((preset) => (
            <button type="button" key={preset.cron} onClick={() => setCron(preset.cron)}>
              {preset.label}
            </button>
          ))}
        </div>
      </div>
      <div className="field">
        <label htmlFor="schedule-timezone">Timezone</label>
        <input
          id="schedule-timezone"
          list="schedule-timezones"
          value={timezone}
          maxLength={64}
          autoComplete="off"
          spellCheck={false}
          onChange={(event) => setTimezone(event.target.value)}
        />
        <datalist id="schedule-timezones">
          {zones.map((zone) => (
            <option key={zone} value={zone} />
          ))}
        </datalist>
      </div>

      <div className="preview" aria-live="polite">
        {!previewing ? null : previewQuery.isError ? (
          <p role="alert" className="error">
            {messageOf(previewQuery.error)}
          </p>
        ) : previewQuery.data ? (
          <>
            <p>
              <strong>{previewQuery.data.description}</strong> ({previewQuery.data.timezone})
            </p>
            <ol aria-label="Next runs" className="runs">
              {previewQuery.data.nextRuns.map((run) => (
                <li key={run}>
                  <Time value={run} />
                </li>
              ))}
            </ol>
          </>
        ) : (
          <p className="muted">Checking the expression…</p>
        )}
      </div>

      <div className="field">
        <label htmlFor="schedule-retention">Retention days</label>
        <input
          id="schedule-retention"
          type="number"
          inputMode="numeric"
          min={1}
          max={36500}
          value={retention}
          aria-describedby="schedule-retention-hint"
          onChange={(event) => setRetention(event.target.value)}
        />
        <p id="schedule-retention-hint" className="hint">
          Its backups older than this are deleted; empty keeps them all.
        </p>
      </div>
      <div className="check">
        <input
          id="schedule-sync"
          type="checkbox"
          checked={syncToCloud}
          disabled={!canSync}
          aria-describedby={configured ? undefined : 'schedule-sync-hint'}
          onChange={(event) => setSyncToCloud(event.target.checked)}
        />
        <label htmlFor="schedule-sync">Sync to cloud</label>
        {!configured && (
          <p id="schedule-sync-hint" className="hint">
            {storage.isPending ? 'Checking cloud storage…' : 'Cloud storage is not configured.'}
          </p>
        )}
      </div>
      {save.isError && (
        <p role="alert" className="error">
          {messageOf(save.error)}
        </p>
      )}
      <div className="buttons">
        <button type="submit" className="primary" disabled={save.isPending}>
          Save schedule
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  )
}

function DeleteScheduleDialog({
  schedule,
  onClose,
  onDeleted,
}: {
  schedule: Schedule
  onClose: () => void
  onDeleted: () => void
}) {
  return (
    <ConfirmDelete
      name={schedule.name}
      remove={() =>
        unwrap(api.DELETE('/schedules/{schedule_id}', { params: { path: { schedule_id: schedule.id } } }))
      }
      onClose={onClose}
      onDeleted={onDeleted}
    >
      <p>The schedule stops; the backups it made stay.</p>
    </ConfirmDelete>
  )
}
