"""What a roster import will do: each checked row matched to a child and a class on file, then turned into the
rows to insert and the changes to make. Pure work on rows already loaded (:class:`SchoolState`); nothing here
touches the database, so a dry run stops after planning and the service writes the plan in one transaction.
"""

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from api.crypto import FieldCipher
from api.idcard import mask_id_number, validate_id_number
from api.models.children import Child, ChildEvent, ChildEventKind, ChildStatus, ParentsAway, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import School, SchoolClass, class_label
from api.models.roster import RosterImportReport
from api.scoping import Principal
from api.services.identity import ID_NUMBER_CONTEXT, reveal_id_number
from api.services.roster.columns import SLOT_LABELS, SLOTS, ChildRow, GuardianRow, LinkRow, parent_role, slot_of
from api.services.roster.parse import (
    GuardianEntry,
    ParsedRoster,
    RosterRow,
    RowError,
    identity_errors,
    normalize_class_name,
)

# The sex a relation implies, for a new guardian record.
IMPORT_REASON = "花名册导入"

# The sex a relation implies, for a new guardian record.
_MALE_RELATIONS = ("祖父", "爷爷", "外祖父", "外公", "姥爷", "叔叔", "伯伯", "伯父", "舅舅", "姑父", "姨父", "哥哥")
_FEMALE_RELATIONS = ("祖母", "奶奶", "外祖母", "外婆", "姥姥", "婶婶", "伯母", "姑姑", "姨妈", "舅妈", "姐姐")
RELATION_SEX = {**dict.fromkeys(_MALE_RELATIONS, Sex.male), **dict.fromkeys(_FEMALE_RELATIONS, Sex.female)}


@dataclass
class SchoolState:
    """Everything of the school an import compares with, as loaded by the service."""

    school: School
    classes: list[SchoolClass]
    children: list[ChildRow]
    links: dict[uuid.UUID, list[LinkRow]]  # child id → links (active or not), in contact order
    guardians: dict[uuid.UUID, GuardianRow]


def class_key(grade: int, name: str) -> tuple[int, str]:
    return grade, normalize_class_name(name)


# ---- planning an import ----------------------------------------------------------------------------------


class Person:
    """A guardian the roster names: one on file (its changes are collected) or a new record."""

    def __init__(self, *, record: GuardianRow | None = None, values: dict[str, Any] | None = None) -> None:
        self.record = record
        self.values = values or {}
        self.changes: dict[str, Any] = {}
        self.id: uuid.UUID = record.id if record is not None else self.values["id"]

    @property
    def is_new(self) -> bool:
        return self.record is None

    def get(self, attribute: str) -> Any:
        if self.record is None:
            return self.values.get(attribute)
        return self.changes.get(attribute, getattr(self.record, attribute))

    def set(self, attribute: str, value: Any) -> None:
        if self.record is None:
            self.values[attribute] = value
        elif getattr(self.record, attribute) == value:
            self.changes.pop(attribute, None)
        else:
            self.changes[attribute] = value


_ROW_TEMPLATES: dict[Any, dict[str, Any]] = {}


def new_row(model: Any, **values: Any) -> dict[str, Any]:
    """A full row of ``model`` for a bulk insert: every column, with the model's declared defaults (so every
    row has the same keys). Values made by a factory (ids, timestamps) are the caller's to give."""
    template = _ROW_TEMPLATES.get(model)
    if template is None:
        template = {}
        for column in sa.inspect(model).columns:  # mapped: a column the database keeps itself is left out
            info = model.model_fields.get(column.key)
            usable = info is not None and info.default_factory is None and not info.is_required()
            template[column.key] = info.default if usable and info is not None else None
        _ROW_TEMPLATES[model] = template
    row = dict(template)
    row.update(values)
    return row


@dataclass
class Plan:
    new_classes: list[SchoolClass] = field(default_factory=list)
    new_children: list[dict[str, Any]] = field(default_factory=list)
    child_changes: list[tuple[ChildRow, dict[str, Any]]] = field(default_factory=list)
    people: dict[uuid.UUID, Person] = field(default_factory=dict)
    new_links: list[dict[str, Any]] = field(default_factory=list)
    link_changes: dict[uuid.UUID, tuple[LinkRow, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    updated: int = 0
    unchanged: int = 0
    re_enrolled: int = 0

    def change_link(self, link: LinkRow, **changes: Any) -> None:
        pending = self.link_changes.setdefault(link.id, (link, {}))[1]
        for key, value in changes.items():
            current = pending.get(key, getattr(link, key))
            if current != value:
                pending[key] = value
        if not pending:
            del self.link_changes[link.id]

    def link_value(self, link: LinkRow, key: str) -> Any:
        pending = self.link_changes.get(link.id)
        return pending[1].get(key, getattr(link, key)) if pending else getattr(link, key)


class Planner:
    """Turns checked rows into the writes an import makes; nothing is written here (a dry run stops after)."""

    def __init__(
        self,
        state: SchoolState,
        *,
        cipher: FieldCipher,
        principal: Principal,
        now: datetime,
        today: date,
    ) -> None:
        self.state = state
        self.cipher = cipher
        self.principal = principal
        self.now = now
        self.today = today
        self.plan = Plan()
        # Children already on file: (id, own cells changed, guardians the row names), settled in finish().
        self._existing: list[tuple[uuid.UUID, bool, list[Person]]] = []
        self.classes = {c.id: c for c in state.classes}
        self.by_phone: dict[tuple[str, str], Person] = {}
        self.by_home: dict[tuple[str, str], Person] = {}
        # Every guardian of the school, wrapped once; only those the roster names end up in the plan.
        self.known: dict[uuid.UUID, Person] = {}
        children = {c.id: c for c in state.children}
        for child_id, links in state.links.items():
            for link in links:
                person = self.person(state.guardians[link.guardian_id])
                phone, home = person.get("phone"), children[child_id].home_address
                if phone:
                    self.by_phone.setdefault((person.get("name"), phone), person)
                elif home:
                    self.by_home.setdefault((person.get("name"), home), person)

    def person(self, guardian: GuardianRow) -> Person:
        found = self.known.get(guardian.id)
        if found is None:
            found = self.known[guardian.id] = Person(record=guardian)
        return found

    # -- children

    def add_row(self, row: RosterRow, child: ChildRow | None, class_id: uuid.UUID) -> None:
        given = row.child
        parents_away: ParentsAway = given.get("parents_away") or (
            ParentsAway(child.parents_away) if child is not None else ParentsAway.both
        )
        home = given.get("home_address") or (child.home_address if child is not None else None)
        if child is None:
            child_id = self._new_child(row, class_id, parents_away)
            self._guardians(row, child_id, None, parents_away, home)
            return
        changed = self._update_child(row, child, class_id, parents_away)
        named = self._guardians(row, child.id, child, parents_away, home)
        self._existing.append((child.id, changed, named))

    def _new_child(self, row: RosterRow, class_id: uuid.UUID, parents_away: ParentsAway) -> uuid.UUID:
        assert row.id_number is not None and row.id_index is not None
        values = new_row(Child, **row.child)
        child_id = uuid.uuid4()
        values.update(
            id=child_id,
            school_id=self.state.school.id,
            class_id=class_id,
            id_number_cipher=self.cipher.encrypt(row.id_number.number, context=ID_NUMBER_CONTEXT),
            id_number_index=row.id_index,
            id_number_masked=mask_id_number(row.id_number.number),
            parents_away=parents_away,
            is_left_behind=parents_away != ParentsAway.none,
            status=ChildStatus.enrolled,
            created_at=self.now,
            updated_at=self.now,
        )
        self.plan.new_children.append(values)
        self._event(child_id, ChildEventKind.enrolled, to_school_id=self.state.school.id, to_class_id=class_id)
        return child_id

    def _update_child(self, row: RosterRow, child: ChildRow, class_id: uuid.UUID, parents_away: ParentsAway) -> bool:
        changes = {key: value for key, value in row.child.items() if getattr(child, key) != value}
        is_left_behind = parents_away != ParentsAway.none
        if child.is_left_behind != is_left_behind:
            changes["is_left_behind"] = is_left_behind
            kind = ChildEventKind.became_left_behind if is_left_behind else ChildEventKind.parents_returned
            self._event(child.id, kind)
        if child.class_id != class_id:
            changes["class_id"] = class_id
            old, new = self.classes.get(child.class_id) if child.class_id else None, self.classes.get(class_id)
            promoted = old is not None and new is not None and new.grade == old.grade + 1
            self._event(
                child.id,
                ChildEventKind.promoted if promoted else ChildEventKind.class_changed,
                from_class_id=child.class_id,
                to_class_id=class_id,
            )
        if child.status != ChildStatus.enrolled:
            changes.update(status=ChildStatus.enrolled, status_reason=None, status_changed_on=self.today)
            self.plan.re_enrolled += 1
            self._event(child.id, ChildEventKind.re_enrolled, to_school_id=child.school_id, to_class_id=class_id)
        if child.id_number_index is None and row.id_number is not None:
            # A file first made without an ID number gets it from the roster.
            changes.update(
                id_number_cipher=self.cipher.encrypt(row.id_number.number, context=ID_NUMBER_CONTEXT),
                id_number_index=row.id_index,
                id_number_masked=mask_id_number(row.id_number.number),
            )
        if not changes:
            return False
        changes["updated_at"] = self.now
        self.plan.child_changes.append((child, changes))
        return True

    def _event(self, child_id: uuid.UUID, kind: ChildEventKind, **values: Any) -> None:
        event = new_row(
            ChildEvent,
            id=uuid.uuid4(),
            child_id=child_id,
            kind=kind,
            effective_on=self.today,
            reason=IMPORT_REASON,
            recorded_at=self.now,
            recorded_by_id=self.principal.account_id,
            **values,
        )
        self.plan.events.append(event)

    # -- guardians and links

    def _resolve(self, entry: GuardianEntry, in_slot: list[GuardianRow], home: str | None) -> Person:
        """Same school + same name + same phone is the same person; so is the person already in this place
        for the child under the same name (their phone changed); without a phone, the same name at the same
        home address (siblings' grandmother). Anyone else is a new record."""
        assert entry.name is not None
        if entry.phone:
            found = self.by_phone.get((entry.name, entry.phone))
            if found is not None:
                return found
        for guardian in in_slot:
            if guardian.name == entry.name:
                return self.person(guardian)
        if not entry.phone and home:
            found = self.by_home.get((entry.name, home))
            if found is not None:
                return found
        values = new_row(Guardian, id=uuid.uuid4(), name=entry.name, created_at=self.now, updated_at=self.now)
        return Person(values=values)

    def _merge(self, person: Person, entry: GuardianEntry, home: str | None) -> None:
        if entry.phone and entry.phone != person.get("phone"):
            person.set("phone", entry.phone)
        for attribute, value in entry.details.items():
            if value != person.get(attribute):
                person.set(attribute, value)
        if entry.age is not None:
            born = person.get("birth_year")
            # Ages are rough (birthdays, last year's roster): a year either way keeps the recorded year.
            if born is None or abs(self.today.year - born - entry.age) > 1:
                person.set("birth_year", self.today.year - entry.age)
        if person.get("sex") is None:
            sex = {"father": Sex.male, "mother": Sex.female}.get(entry.slot) or RELATION_SEX.get(entry.relation or "")
            if sex is not None:
                person.set("sex", sex)
        phone = person.get("phone")
        if phone:
            self.by_phone[(person.get("name"), phone)] = person
        elif home:
            self.by_home.setdefault((person.get("name"), home), person)

    def _guardians(
        self,
        row: RosterRow,
        child_id: uuid.UUID,
        child: ChildRow | None,
        parents_away: ParentsAway,
        home: str | None,
    ) -> list[Person]:
        links = self.state.links.get(child_id, []) if child is not None else []
        active_in_slot = {slot: [link for link in links if link.is_active and slot_of(link) == slot] for slot in SLOTS}
        chosen: dict[str, Person] = {}
        for slot in SLOTS:
            entry = row.guardians.get(slot)
            if entry is None:
                continue
            current = [self.state.guardians[link.guardian_id] for link in active_in_slot[slot]]
            person = self._resolve(entry, current, home)
            self._merge(person, entry, home)
            self.plan.people[person.id] = person
            chosen[slot] = person
        entrusted = chosen.get("entrusted")
        if entrusted is not None and any(entrusted is chosen.get(s) for s in ("father", "mother")):
            # A parent at home who is also written in as the guardian: one link, as the parent.
            del chosen["entrusted"]

        chosen_ids = {person.id for person in chosen.values()}
        by_guardian = {link.guardian_id: link for link in links}
        new_links: list[tuple[str, Person, GuardianRole, str, int | None]] = []
        for slot, person in chosen.items():
            role = GuardianRole.entrusted_guardian if slot == "entrusted" else parent_role(slot, parents_away)
            entry = row.guardians[slot]
            relation = entry.relation if slot == "entrusted" and entry.relation else SLOT_LABELS[slot]
            link = by_guardian.get(person.id)
            in_place = link is not None and any(link is old for old in active_in_slot[slot])
            replaced = None
            if not in_place:
                # The roster names someone else for this place: the first person there is replaced.
                replaced = next((old for old in active_in_slot[slot] if old.guardian_id not in chosen_ids), None)
                if replaced is not None:
                    self.plan.change_link(
                        replaced, is_active=False, until=self.today, end_reason=f"{IMPORT_REASON}：已更换"
                    )
            order = self.plan.link_value(replaced, "contact_order") if replaced is not None else None
            if link is not None:
                reactivate = {} if link.is_active else {"is_active": True, "until": None, "end_reason": None}
                if order is not None:
                    reactivate["contact_order"] = order
                self.plan.change_link(link, role=role, relation=relation, **reactivate)
            else:
                new_links.append((slot, person, role, relation, order))

        # Parents whose columns are blank still follow 留守类型: away or at home.
        for slot in ("father", "mother"):
            if slot not in chosen:
                for link in active_in_slot[slot]:
                    self.plan.change_link(link, role=parent_role(slot, parents_away))

        self._add_links(child_id, child, links, new_links)
        return list(chosen.values())

    def _add_links(
        self,
        child_id: uuid.UUID,
        child: ChildRow | None,
        links: list[LinkRow],
        new_links: list[tuple[str, Person, GuardianRole, str, int | None]],
    ) -> None:
        """New links get a place in the emergency call order: the entrusted guardian first, then a parent at
        home, then the parents away. A link replacing another takes its place; existing orders stay."""
        rank = {GuardianRole.entrusted_guardian: 0, GuardianRole.parent_home: 1, GuardianRole.parent_away: 2}
        new_links.sort(key=lambda item: (rank[item[2]], SLOTS.index(item[0])))
        active = [link for link in links if self.plan.link_value(link, "is_active")]
        highest = max((self.plan.link_value(link, "contact_order") for link in active), default=0)
        for _slot, person, role, relation, order in new_links:
            if order is None and child is not None and role == GuardianRole.entrusted_guardian and active:
                # A first entrusted guardian for a child already on file is called first; the others move down.
                for link in active:
                    self.plan.change_link(link, contact_order=min(99, self.plan.link_value(link, "contact_order") + 1))
                highest += 1
                order = 1
            elif order is None:
                highest += 1
                order = min(99, highest)
            values = new_row(
                ChildGuardian,
                id=uuid.uuid4(),
                child_id=child_id,
                guardian_id=person.id,
                role=role,
                relation=relation,
                contact_order=order,
                is_active=True,
                since=self.today,
                created_at=self.now,
            )
            self.plan.new_links.append(values)

    def finish(self) -> Plan:
        """Count the children on file that change: their own cells, their links, or a guardian they share."""
        plan = self.plan
        with_new_links = {values["child_id"] for values in plan.new_links}
        with_changed_links = {link.child_id for link, changes in plan.link_changes.values() if changes}
        for child_id, changed, named in self._existing:
            if changed or child_id in with_new_links or child_id in with_changed_links:
                plan.updated += 1
            elif any(person.changes for person in named):
                plan.updated += 1
            else:
                plan.unchanged += 1
        return plan


# ---- matching rows to what is on file -------------------------------------------------------------------


def unknown_indexes(parsed: ParsedRoster, state: SchoolState) -> list[str]:
    """The rows' ID numbers (blind indexes) not on file at this school: the ones to look for elsewhere."""
    on_file = {c.id_number_index for c in state.children if c.id_number_index}
    return [r.id_index for r in parsed.rows if r.id_index and r.id_index not in on_file]


@dataclass
class Matched:
    children: dict[int, ChildRow | None]  # row number → the child on file (None: a new child)
    class_ids: dict[int, uuid.UUID]
    new_classes: list[SchoolClass]
    errors: list[RowError]


def match_rows(
    parsed: ParsedRoster,
    state: SchoolState,
    *,
    elsewhere: set[str],
    cipher: FieldCipher,
    today: date,
    create_classes: bool,
) -> Matched:
    """Find each row's child and class on file. ``elsewhere``: the rows' ID numbers (blind indexes) that are on
    file at another school, which the service looks up (:func:`unknown_indexes` names the ones to ask about)."""
    errors: list[RowError] = []
    by_index = {c.id_number_index: c for c in state.children if c.id_number_index}
    by_masked: dict[tuple[str | None, str], list[ChildRow]] = {}
    without_number: dict[tuple[str, str, date], list[ChildRow]] = {}
    for c in state.children:
        if c.id_number_index:
            by_masked.setdefault((c.id_number_masked, c.name), []).append(c)
        else:
            without_number.setdefault((c.name, str(c.sex), c.birth_date), []).append(c)

    children: dict[int, ChildRow | None] = {}
    first_row: dict[uuid.UUID, int] = {}
    for row in parsed.rows:
        child: ChildRow | None = None
        if row.id_index is not None:
            if row.id_index in elsewhere:
                errors.append(
                    RowError(
                        row.row,
                        "身份证号",
                        "id_number_other_school",
                        "该学生已在其他学校建档；转入的学生请由原学校或县教育局办理转学，不能重复建档",
                    )
                )
                continue
            child = by_index.get(row.id_index)
            if child is None and "name" in row.child and row.id_number is not None:
                key = (row.child["name"], row.id_number.sex.value, row.id_number.birth_date)
                candidates = without_number.get(key, [])
                child = candidates[0] if len(candidates) == 1 else None
        elif row.masked_id is not None:
            candidates = by_masked.get((row.masked_id, row.child.get("name", "")), [])
            if len(candidates) != 1 or candidates[0].id_number_cipher is None:
                errors.append(
                    RowError(
                        row.row,
                        "身份证号",
                        "id_number_masked_unknown",
                        "身份证号中间已隐去，且找不到对应的已建档学生；新学生请填写完整的18位身份证号",
                    )
                )
                continue
            child = candidates[0]
            assert child.id_number_cipher is not None
            stored = validate_id_number(reveal_id_number(cipher, child.id_number_cipher), today=today)
            row.id_number, row.id_index = stored, child.id_number_index
            mismatch = identity_errors(row, stored)
            if mismatch:
                errors.extend(mismatch)
                continue
        else:
            continue  # the parser already reported the missing or broken number
        if child is not None:
            first = first_row.setdefault(child.id, row.row)
            if first != row.row:
                errors.append(
                    RowError(
                        row.row, "身份证号", "id_number_duplicate", f"与第{first}行是同一名学生（每名学生只能有一行）"
                    )
                )
                continue
        children[row.row] = child

    class_ids, new_classes = match_classes(parsed, state, create_classes=create_classes, errors=errors)
    return Matched(children=children, class_ids=class_ids, new_classes=new_classes, errors=errors)


def match_classes(
    parsed: ParsedRoster, state: SchoolState, *, create_classes: bool, errors: list[RowError]
) -> tuple[dict[int, uuid.UUID], list[SchoolClass]]:
    """Each row's class (年级 + 班级) among the school's classes, or a new one if the caller allows it."""
    active: dict[tuple[int, str], SchoolClass] = {}
    inactive: dict[tuple[int, str], SchoolClass] = {}
    for existing in state.classes:
        (active if existing.is_active else inactive).setdefault(class_key(existing.grade, existing.name), existing)
    class_ids: dict[int, uuid.UUID] = {}
    new_classes: dict[tuple[int, str], SchoolClass] = {}
    for row in parsed.rows:
        if row.grade is None or row.class_name is None:
            continue
        key = class_key(row.grade, row.class_name)
        label = class_label(row.grade, key[1])
        klass = active.get(key) or new_classes.get(key)
        if klass is None and key in inactive:
            errors.append(RowError(row.row, "班级", "class_inactive", f"{label}已停用；请先在系统中恢复该班级"))
            continue
        if klass is None and create_classes:
            klass = new_classes[key] = SchoolClass(
                id=uuid.uuid4(), school_id=state.school.id, grade=row.grade, name=key[1], is_active=True
            )
        if klass is None:
            errors.append(
                RowError(
                    row.row,
                    "班级",
                    "class_not_found",
                    f"本校还没有{label}；请先在系统中建班，或导入时选择“自动新建班级”(create_classes)",
                )
            )
            continue
        class_ids[row.row] = klass.id
    return class_ids, list(new_classes.values())


# ---- the plan and what it reports ------------------------------------------------------------------------


def plan_import(
    parsed: ParsedRoster,
    state: SchoolState,
    matched: Matched,
    *,
    cipher: FieldCipher,
    principal: Principal,
    now: datetime,
    today: date,
) -> Plan:
    """The writes an import of these checked and matched rows makes (CPU-bound: the service runs it in a thread)."""
    planner = Planner(state, cipher=cipher, principal=principal, now=now, today=today)
    for row in parsed.rows:
        planner.add_row(row, matched.children[row.row], matched.class_ids[row.row])
    plan = planner.finish()
    plan.new_classes = matched.new_classes
    return plan


def import_report(parsed: ParsedRoster, plan: Plan, *, dry_run: bool) -> RosterImportReport:
    """What an import does (or, for a dry run, would do), counted from its plan."""
    people = list(plan.people.values())
    return RosterImportReport(
        dry_run=dry_run,
        batch_id=None,
        file_format=parsed.file_format,
        rows=len(parsed.rows),
        children_created=len(plan.new_children),
        children_updated=plan.updated,
        children_unchanged=plan.unchanged,
        children_re_enrolled=plan.re_enrolled,
        guardians_created=sum(1 for p in people if p.is_new),
        guardians_reused=sum(1 for p in people if not p.is_new),
        guardians_updated=sum(1 for p in people if not p.is_new and p.changes),
        classes_created=[class_label(c.grade, c.name) for c in plan.new_classes],
    )
