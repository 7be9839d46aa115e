"""The bureau's statistics as files it can use as they are (pure): XLSX workbooks (a sheet per level and a
sheet of monthly trends with native Excel charts), CSV, and the quarterly and annual bulletins (季度/年度通报)
as Word documents. Every file is written from :class:`api.models.stats.StatsTable` / ``StatsTrend`` objects
exactly as the API answers them — the same figures and the same suppression marks — and nothing here touches
the database. The work is CPU-bound: routes run it with ``asyncio.to_thread``.
"""
