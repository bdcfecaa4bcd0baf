"""Groups on disk, in SillyTavern's layout: `groups/<id>.json` and `group chats/<chat id>.jsonl`.

`GroupStore` is given its three folders (the data home decides where they are). Every write goes
through tavern.store.atomic (temp file, fsync, rename; new files 0600) and every name a user
gives a file goes through tavern.store.names. Deleting never destroys anything: a group and its
chats, or one chat, are moved into the trash folder, and `restore` brings a group back.

SillyTavern's rules kept here (src/endpoints/groups.js, group-chats.js): a group's id is
`String(Date.now())` at creation; a new chat's id is `humanizedDateTime()`; `chats` lists every
chat and `chat_id` is the open one; adding a member puts it first in the list (`unshift`);
muting adds it to `disabled_members`; renaming a chat moves it to the end of `chats`; deleting the
open chat opens the last one left, or a new one. Two deliberate differences: deleting goes to the
trash (SillyTavern unlinks), and removing a member also unmutes it, so a member added back later
is not silently muted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tavern.groups.chatfiles import (
    GroupChatFile,
    GroupChatInfo,
    chat_header,
    chat_info,
    encode_chat,
    read_chat_file,
)
from tavern.groups.jsvalues import st_json
from tavern.groups.model import ActivationStrategy, GenerationMode, Group, GroupError, new_group, parse_group
from tavern.store.atomic import (
    append_line_durable,
    atomic_write_bytes,
    copy_file,
    create_exclusive,
    describe_os_error,
    fsync_dir,
    make_dirs,
)
from tavern.store.names import free_file_name, sanitize_file_name

Message = Mapping[str, object]


def _local_now() -> datetime:
    return datetime.now().astimezone()


@dataclass
class GroupListing:
    """Every readable group, and one line for each file that is not one."""

    groups: list[Group] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class GroupStore:
    """The groups folder, the group chats folder, and where deleted ones go."""

    def __init__(
        self,
        groups_dir: Path | str,
        group_chats_dir: Path | str,
        trash_dir: Path | str,
        *,
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self.groups_dir = Path(groups_dir)
        self.group_chats_dir = Path(group_chats_dir)
        self.trash_dir = Path(trash_dir)
        self._clock = clock

    # -- paths --------------------------------------------------------------------------------
    def group_path(self, group_id: str) -> Path:
        return self.groups_dir / _file_name(f"{group_id}.json", "group id", group_id)

    def chat_path(self, chat_id: str) -> Path:
        return self.group_chats_dir / _file_name(f"{chat_id}.jsonl", "chat name", chat_id)

    # -- groups -------------------------------------------------------------------------------
    def list_groups(self) -> GroupListing:
        """All groups, by name; a bad file is a problem line, not a failure (ST skips it too)."""
        listing = GroupListing()
        if not self.groups_dir.is_dir():
            return listing
        for path in sorted(self.groups_dir.glob("*.json")):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                listing.groups.append(self._read(path))
            except GroupError as err:
                listing.problems.append(str(err))
        listing.groups.sort(key=lambda g: (g.name.casefold(), g.id))
        return listing

    def load(self, group_id: str) -> Group:
        path = self.group_path(group_id)
        if not path.exists():
            raise GroupError(f"no group with id '{group_id}' in {self.groups_dir}")
        return self._read(path)

    def save(self, group: Group) -> Group:
        """Write `group` to `<id>.json` as SillyTavern formats it; returns it."""
        path = self.group_path(group.id)
        try:
            make_dirs(path.parent)
            atomic_write_bytes(path, group.to_json().encode("utf-8"))
        except OSError as err:
            raise GroupError(f"could not save group '{group.name}': {describe_os_error(err)}") from None
        return group

    def create(
        self,
        name: str,
        members: Sequence[str],
        *,
        activation_strategy: int = ActivationStrategy.NATURAL,
        generation_mode: int = GenerationMode.SWAP,
        allow_self_responses: bool = False,
        first_messages: Sequence[Message] | None = None,
    ) -> Group:
        """A new group with one chat. `first_messages` (the members' greetings) writes that chat's
        file now; without them the file is left for the first opening, as SillyTavern does."""
        _check_members(members)
        chat_id = self._free_chat_id(())
        stamp = int(self._clock().timestamp() * 1000)
        make_dirs(self.groups_dir)
        while True:
            group = new_group(
                str(stamp), name.strip(), members, chat_id, activation_strategy=activation_strategy,
                generation_mode=generation_mode, allow_self_responses=allow_self_responses,
            )
            # Two groups made in the same millisecond must not share a file: the next id is free.
            if self._create_file(self.group_path(group.id), group.to_json().encode("utf-8"), group.name):
                break
            stamp += 1
        if first_messages is not None:
            self._create_chat(chat_id, first_messages, None)
        return group

    def rename(self, group: Group, name: str) -> Group:
        if not name.strip():
            raise GroupError("a group needs a name")
        return self.save(group.updated({"name": name.strip()}))

    def set_favourite(self, group: Group, fav: bool) -> Group:
        return self.save(group.updated({"fav": fav}))

    def update(self, group: Group, changes: Mapping[str, object]) -> Group:
        """Change other settings (`activation_strategy`, `generation_mode`, `auto_mode_delay`,
        `allow_self_responses`, the join prefix/suffix...), checked like a file."""
        return self.save(group.updated(changes))

    def delete(self, group: Group) -> Path:
        """Move the group file and its chat files into a folder of their own in the trash;
        returns that folder (for `restore`)."""
        folder = self.trash_dir / "groups" / free_file_name(
            _file_name(group.id, "group id", group.id), "", lambda n: (self.trash_dir / "groups" / n).exists()
        )
        path = self.group_path(group.id)
        if not path.exists():
            raise GroupError(f"group '{group.name}' is not in {self.groups_dir} any more")
        try:
            make_dirs(folder)
            # The group file first: if a chat then fails to move, the group is already gone from
            # the list and `restore` brings back what reached the trash; no chat is orphaned.
            _move(path, folder / path.name)
            for chat_id in group.chats:
                source = self.chat_path(chat_id)
                if source.exists():
                    _move(source, folder / source.name)
        except OSError as err:
            raise GroupError(f"could not move group '{group.name}' to the trash: {describe_os_error(err)}") from None
        return folder

    def restore(self, trashed: Path | str) -> Group:
        """Bring back a group `delete` moved to `trashed`, with its chats."""
        folder = Path(trashed)
        files = sorted(folder.glob("*.json"))
        if len(files) != 1:
            raise GroupError(f"{folder} does not hold a deleted group")
        group = self._read(files[0])
        chats = sorted(folder.glob("*.jsonl"))
        taken = [p.name for p in [self.group_path(group.id), *(self.group_chats_dir / c.name for c in chats)]
                 if p.exists()]
        if taken:
            raise GroupError(f"cannot restore group '{group.name}': {taken[0]} exists again")
        try:
            make_dirs(self.group_chats_dir)
            make_dirs(self.groups_dir)
            for chat in chats:
                _move(chat, self.group_chats_dir / chat.name)
            _move(files[0], self.group_path(group.id))
        except OSError as err:
            raise GroupError(f"could not restore group '{group.name}': {describe_os_error(err)}") from None
        try:
            folder.rmdir()
        except OSError:
            pass  # something else was put there: it stays in the trash
        return group

    # -- members ------------------------------------------------------------------------------
    def add_member(self, group: Group, avatar: str, position: int = 0) -> Group:
        """Add a card (its file name); first in the list by default, as SillyTavern adds."""
        _check_members([avatar])
        if avatar in group.members:
            return group
        members = list(group.members)
        members.insert(position, avatar)
        return self.save(group.updated({"members": members}))

    def remove_member(self, group: Group, avatar: str) -> Group:
        self._require_member(group, avatar)
        return self.save(group.updated({
            "members": [m for m in group.members if m != avatar],
            "disabled_members": [m for m in group.disabled_members if m != avatar],
        }))

    def set_muted(self, group: Group, avatar: str, muted: bool = True) -> Group:
        """Mute (never chosen to speak) or unmute a member."""
        self._require_member(group, avatar)
        disabled = [m for m in group.disabled_members if m != avatar] + ([avatar] if muted else [])
        if disabled == list(group.disabled_members):
            return group
        return self.save(group.updated({"disabled_members": disabled}))

    def move_member(self, group: Group, avatar: str, offset: int) -> Group:
        """Move a member up (negative) or down the list, which is the list order's turn order."""
        self._require_member(group, avatar)
        members = list(group.members)
        index = members.index(avatar)
        target = max(0, min(len(members) - 1, index + offset))
        members.insert(target, members.pop(index))
        return self.save(group.updated({"members": members}))

    # -- chats --------------------------------------------------------------------------------
    def list_chats(self, group: Group) -> list[GroupChatInfo]:
        """The group's chats in its own order; one not written yet shows with `exists` False."""
        return [chat_info(self.chat_path(chat_id), chat_id) for chat_id in group.chats]

    def read_chat(self, group: Group, chat_id: str | None = None) -> GroupChatFile:
        """A chat of the group (its open one by default). A pre-1.13 chat gets the header
        SillyTavern's migration would give it, from the metadata the group kept."""
        chat_id = group.chat_id if chat_id is None else chat_id
        chat = read_chat_file(self.chat_path(chat_id), chat_id)
        if chat.exists and chat.header is None:
            legacy = group.legacy_chat_metadata(chat_id)
            chat.header = {"chat_metadata": legacy or {}, "user_name": "unused", "character_name": "unused"}
        return chat

    def write_chat(self, chat: GroupChatFile) -> None:
        """Rewrite a whole chat (after an edit or a delete of a message)."""
        header = chat.header if chat.header is not None else chat_header()
        try:
            make_dirs(self.group_chats_dir)
            atomic_write_bytes(self.chat_path(chat.chat_id), encode_chat([header, *chat.messages]))
        except OSError as err:
            raise GroupError(f"could not save group chat '{chat.chat_id}': {describe_os_error(err)}") from None

    def append_message(self, chat_id: str, message: Message) -> None:
        """Add one message at the end, durably; a chat not written yet gets its header first."""
        path = self.chat_path(chat_id)
        try:
            if not path.exists() and self._create_chat(chat_id, [message], None):
                return
            append_line_durable(path, st_json(message))
        except OSError as err:
            raise GroupError(f"could not save the message in '{chat_id}': {describe_os_error(err)}") from None

    def new_chat(
        self, group: Group, first_messages: Sequence[Message] = (), metadata: Mapping[str, object] | None = None
    ) -> Group:
        """Start a chat (header and `first_messages` written now) and make it the open one."""
        chat_id = self._free_chat_id(group.chats)
        self._create_chat(chat_id, first_messages, metadata)
        return self.save(group.updated({"chats": [*group.chats, chat_id], "chat_id": chat_id}))

    def open_chat(self, group: Group, chat_id: str) -> Group:
        """Make one of the group's chats the open one (ST also stamps `date_last_chat`)."""
        self._require_chat(group, chat_id)
        stamp = int(self._clock().timestamp() * 1000)
        return self.save(group.updated({"chat_id": chat_id, "date_last_chat": stamp}))

    def rename_chat(self, group: Group, chat_id: str, new_name: str) -> Group:
        self._require_chat(group, chat_id)
        new_id = sanitize_file_name(new_name, "")
        if not new_id:
            raise GroupError(f"'{new_name}' cannot be a chat name")
        if new_id == chat_id:
            return group
        target = self.chat_path(new_id)
        if new_id in group.chats or target.exists():
            raise GroupError(f"a group chat named '{new_id}' exists already")
        source = self.chat_path(chat_id)
        try:
            if source.exists():
                _move(source, target)
        except OSError as err:
            raise GroupError(f"could not rename chat '{chat_id}': {describe_os_error(err)}") from None
        chats = [c for c in group.chats if c != chat_id] + [new_id]
        current = new_id if group.chat_id == chat_id else group.chat_id
        return self.save(group.updated({"chats": chats, "chat_id": current}))

    def delete_chat(self, group: Group, chat_id: str) -> tuple[Group, Path | None]:
        """Move one chat to the trash; returns the group (the open chat changed if it was this
        one) and where the file went (None when it had never been written)."""
        self._require_chat(group, chat_id)
        source = self.chat_path(chat_id)
        trashed: Path | None = None
        if source.exists():
            folder = self.trash_dir / "group chats"
            trashed = folder / free_file_name(chat_id, ".jsonl", lambda n: (folder / n).exists())
            try:
                make_dirs(folder)
                _move(source, trashed)
            except OSError as err:
                raise GroupError(f"could not move chat '{chat_id}' to the trash: {describe_os_error(err)}") from None
        chats = [c for c in group.chats if c != chat_id]
        current = group.chat_id
        if current == chat_id:
            if not chats:
                chats.append(self._free_chat_id(chats))
            current = chats[-1]
        return self.save(group.updated({"chats": chats, "chat_id": current})), trashed

    # -- helpers ------------------------------------------------------------------------------
    def _read(self, path: Path) -> Group:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise GroupError(f"{path.name}: cannot read it ({describe_os_error(err)})") from None
        return parse_group(data, path.name)

    def _free_chat_id(self, taken: Sequence[str]) -> str:
        stem = self._clock().strftime("%Y-%m-%d@%Hh%Mm%Ss")  # humanizedDateTime()
        return free_file_name(stem, "", lambda n: n in taken or self.chat_path(n).exists())

    def _create_chat(self, chat_id: str, messages: Sequence[Message], metadata: Mapping[str, object] | None) -> bool:
        make_dirs(self.group_chats_dir)
        body = encode_chat([chat_header(metadata), *messages])
        return self._create_file(self.chat_path(chat_id), body, chat_id)

    def _create_file(self, path: Path, data: bytes, what: str) -> bool:
        try:
            return create_exclusive(path, data)
        except OSError as err:
            raise GroupError(f"could not write '{what}': {describe_os_error(err)}") from None

    @staticmethod
    def _require_member(group: Group, avatar: str) -> None:
        if avatar not in group.members:
            raise GroupError(f"'{avatar}' is not a member of group '{group.name}'")

    @staticmethod
    def _require_chat(group: Group, chat_id: str) -> None:
        if chat_id not in group.chats:
            raise GroupError(f"group '{group.name}' has no chat '{chat_id}'")


def _file_name(name: str, what: str, value: str) -> str:
    clean = sanitize_file_name(name, "")
    if not clean:
        raise GroupError(f"'{value}' cannot be a {what}")
    return clean


def _check_members(members: Sequence[str]) -> None:
    for avatar in members:
        if not isinstance(avatar, str) or not avatar:
            raise GroupError(f"a group member is a card file name, not {avatar!r}")


def _move(source: Path, target: Path) -> None:
    """Move a file through the one writer: a durable copy first, then the original goes, so a
    crash in between leaves two copies, never none."""
    copy_file(source, target)
    os.unlink(source)
    fsync_dir(source.parent)


__all__ = ["GroupListing", "GroupStore"]
