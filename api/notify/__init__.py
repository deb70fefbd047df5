"""Notifications: failed backups, syncs, restores and drills (and, with NOTIFY_ON_SUCCESS,
completed backups and restores), and the no-backup alert, sent to a webhook and by e-mail in
the background. Events: events.py; delivery: service.py and channels.py; what the operations
call: report.py; the alert: alert.py; the API: router.py."""
