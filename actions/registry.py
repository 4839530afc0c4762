"""Every custom action, built with its dependencies."""
from __future__ import annotations

from rasa_sdk import Action

from actions.bills import ActionPayBill, ValidateBillForm
from actions.conversation import (
    ActionAcceptOffer,
    ActionCancelFlow,
    ActionFallback,
    ActionHandoff,
    ActionOfferHuman,
    ActionOutOfScope,
    ActionRepeat,
    ActionSlowDown,
    ActionStoreRating,
)
from actions.feedback import ActionAnswerTicket, ActionSubmitFeedback, ValidateFeedbackForm, ValidateTicketForm
from actions.guide import ActionAnswerGuide, ActionGuideOfferAccepted
from actions.progress import ActionAnswerProgress, ValidateProgressForm
from actions.proxy import ActionProxyConsent, ActionProxyRevoke, ValidateProxyConsentForm
from actions.subscriptions import (ActionAskReminderConsent, ActionCancelReminders, ActionListReminders,
                                   ActionReminderCall, ActionSubscribe, ValidateSubscriptionForm)
from services.container import Services

_WITH_SERVICES = (
    ValidateProgressForm, ActionAnswerProgress, ValidateBillForm, ActionPayBill,
    ValidateFeedbackForm, ActionSubmitFeedback, ValidateTicketForm, ActionAnswerTicket,
    ActionHandoff, ActionStoreRating, ActionAnswerGuide, ActionGuideOfferAccepted, ActionFallback,
    ActionOutOfScope, ValidateProxyConsentForm, ActionProxyConsent, ActionProxyRevoke,
    ValidateSubscriptionForm, ActionAskReminderConsent, ActionSubscribe, ActionListReminders, ActionCancelReminders,
    ActionReminderCall, ActionAcceptOffer,
)
_PLAIN = (ActionRepeat, ActionSlowDown, ActionOfferHuman, ActionCancelFlow)


def build_actions(services: Services) -> list[Action]:
    return [cls(services) for cls in _WITH_SERVICES] + [cls() for cls in _PLAIN]
