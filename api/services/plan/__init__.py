"""工作计划 and 关爱活动: a school's care plan for a term or year and the activities that carry it out.

- ``templates.py`` the typical plans, built from the seeds' month-by-month schedules (data, pure)
- ``progress.py``  an item's progress: late across month ends in Asia/Shanghai, what a progress update does (pure)
- ``rules.py``     checks on dates, months, participants and links; the 三个优先 share (pure)
- ``plans.py``     plans, their 领导小组 and items, progress — the database side
- ``activities.py`` activities and their participants, a child's activities, 三个优先 per school and term
- ``summary.py``  工作总结: the term summary counted from the records, submitted to the bureau
- ``summary_document.py`` the summary as labelled figures and a Word document (pure)
"""
