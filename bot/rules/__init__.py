"""What decides whether a run may start: approvals, the checklist and its checks, what each kind needs.

Imported by ``bot/runs/`` and ``bot/render/``; imports neither.
"""
