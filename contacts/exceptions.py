from common.errors import InputError, NotFoundError


class ContactsError(InputError):
    """Base class of the contacts app's domain errors."""


class TagNotFound(NotFoundError, ContactsError):
    def __init__(self, tag_id: object) -> None:
        super().__init__(f"tag {tag_id} does not exist")
        self.tag_id = tag_id


class ContactNotFound(NotFoundError, ContactsError):
    def __init__(self, contact_id: object, *, owner_id: object | None = None) -> None:
        where = f" among the contacts of user {owner_id}" if owner_id is not None else ""
        super().__init__(f"contact {contact_id} does not exist{where}")
        self.contact_id = contact_id
