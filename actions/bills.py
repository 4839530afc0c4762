"""Bills and payments (缴费): bill type and account -> amount due -> confirm -> payment order."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.common import (FlowValidation, ServiceAction, acting_for, ask_rating, audit_proxy, caller_number, channel_of,
                            reset_flow)
from actions.sms import NOT_SENT, send_sms
from services.billing import BILL_TYPES, ID_NUMBER_BILLS, format_yuan
from services.sms import SmsMessage
from textnorm.ids import is_valid_mobile
from textnorm.keywords import first_match
from textnorm.numbers import ID_NUMBER, kind_of, named
from textnorm.numerals import digits_only

# Words citizens use for each bill type, looked for in free text.
_TYPE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("medical_insurance", ("医保", "医疗", "合作医疗", "新农合")),
    ("pension_insurance", ("养老",)),
    ("gas", ("燃气", "天然气", "煤气")),
    ("electricity", ("电",)),
    ("water", ("水",)),
)


def bill_type_from_text(text: str) -> str | None:
    return text if text in BILL_TYPES else first_match(text, _TYPE_WORDS)


def previous_value(tracker: Tracker, slot: str) -> Any:
    """The value a slot had before the latest user message."""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            seen_user = True
        elif seen_user and event.get("event") == "slot" and event.get("name") == slot:
            return event.get("value")
    return None


class ValidateBillForm(FlowValidation):
    def name(self) -> str:
        return "validate_bill_form"

    def validate_bill_type(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        bill_type = bill_type_from_text(str(value))
        if bill_type is None:
            return self.failed(dispatcher, tracker, "bill_type", "目前能交水费、电费、燃气费、医保和养老保险。")
        result: dict[str, Any] = {"bill_type": bill_type, "failed_attempts": 0}
        before = previous_value(tracker, "bill_type")
        account = tracker.get_slot("bill_account")
        if before and before != bill_type:
            # "不对，是电费": another bill, so the account and the amount read out no longer apply.
            result.update(bill_account=None, bill_id=None, bill_confirm=None)
        elif account and not tracker.get_slot("bill_id") and previous_value(tracker, "bill_account") == account:
            # The account came before the type ("1000000001" out of the blue): check it now.
            result.update(self._check_account(dispatcher, tracker, bill_type, str(account)))
        return result

    def validate_bill_account(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        bill_type = tracker.get_slot("bill_type")
        if bill_type not in BILL_TYPES:
            return {"bill_account": digits_only(str(value)) or None}  # kept until the type is known
        result = self._check_account(dispatcher, tracker, bill_type, str(value))
        if tracker.get_slot("bill_confirm") is not None and result.get("bill_id"):
            result["bill_confirm"] = None  # a corrected account: confirm the new amount
        return result

    def _check_account(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, bill_type: str, value: str
    ) -> dict[str, Any]:
        account = digits_only(value)
        kind = kind_of(account)
        if bill_type in ID_NUMBER_BILLS:
            if len(account) == 18 and kind != ID_NUMBER:
                return self.failed(dispatcher, tracker, "bill_account", "身份证号不对，请核对后再说一遍。")
            if kind != ID_NUMBER:
                said = named(kind)
                return self.failed(dispatcher, tracker, "bill_account",
                                   f"{said}{BILL_TYPES[bill_type]}要说参保人的身份证号，是18位。")
        elif not re.fullmatch(r"\d{10}", account):
            said = named(kind)
            return self.failed(dispatcher, tracker, "bill_account",
                               f"{said}交{BILL_TYPES[bill_type]}要说户号，是缴费单上的10位数字。")
        billing = self.services.billing
        if not billing.account_exists(bill_type, account):
            return self.failed(dispatcher, tracker, "bill_account", f"没有查到这个{BILL_TYPES[bill_type]}账户。")
        due = billing.outstanding(bill_type, account)
        if not due:
            return self.stop(dispatcher, "bill_account", account, f"这个账户的{BILL_TYPES[bill_type]}已经交清了，不用再交。")
        bill = due[0]
        text = f"{bill.type_name}：{bill.period}，应缴{format_yuan(bill.amount_fen)}元。"
        if len(due) > 1:
            text += f"还有{len(due) - 1}笔，交完这笔再交。"
        dispatcher.utter_message(text=text)
        return {"bill_account": account, "bill_id": str(bill.id), "failed_attempts": 0}

    def validate_bill_confirm(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        if any(next(tracker.get_latest_entity_values(e), None) for e in ("account_number", "id_number", "bill_type")):
            # "不对，是电费" / "不对，是1000000002": a correction (its 不对 reads as no), not an answer.
            return {"bill_confirm": None}
        if value is True:
            return {"bill_confirm": True, "failed_attempts": 0}
        if value is False:
            return self.stop(dispatcher, "bill_confirm", False, "好的，先不交。需要时再找我。")
        return self.failed(dispatcher, tracker, "bill_confirm", "现在交请说“确认”，不交请说“不交”。")


class ActionPayBill(ServiceAction):
    def name(self) -> str:
        return "action_pay_bill"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        bill_id = tracker.get_slot("bill_id")
        if tracker.get_slot("flow_stopped") or tracker.get_slot("bill_confirm") is not True or not bill_id:
            return reset_flow()
        channel = channel_of(tracker)
        provider = self.services.payments
        order = self.services.billing.create_order(
            int(bill_id), channel=channel, sender_id=tracker.sender_id, provider=provider.name
        )
        if order.status == "paid":
            dispatcher.utter_message(text="这笔费用已经交过了，不用再交。")
            return reset_flow()
        url = provider.checkout_url(order.order_no)
        intro = "已生成缴费订单。" if order.created else "这笔费用已经下过单了，不会重复收费。"
        amount = format_yuan(order.amount_fen)
        grant = acting_for(self.services, tracker)
        if grant is not None:
            intro = f"（为您{grant.relation}代缴）{intro}"
            audit_proxy(self.services, grant, "order_created", f"订单{order.order_no} {amount}元")
        if channel == "phone":
            caller = caller_number(tracker)
            sms = await send_sms(self.services, caller, SmsMessage("payment_link", {
                "order": order.order_no, "amount": amount})) if caller and is_valid_mobile(caller) else None
            if sms in ("sent", "queued"):
                said = "缴费链接已发到您的手机。" if sms == "sent" else "缴费链接稍后发到您的手机。"
                dispatcher.utter_message(text=f"{intro}{said}也可以到村里的便民服务站缴费。")
            elif sms is not None:
                dispatcher.utter_message(text=f"{intro}{NOT_SENT[sms]}请到村里的便民服务站缴费，说出户号就行。")
            else:
                dispatcher.utter_message(text=f"{intro}请到村里的便民服务站缴费，说出您的户号就行。")
        else:
            dispatcher.utter_message(text=f"{intro}金额{amount}元，请点链接付款：{url}")
        return reset_flow() + ask_rating(dispatcher, "bill", tracker)
