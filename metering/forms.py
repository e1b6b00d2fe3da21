from collections.abc import Sequence

from django import forms
from django.utils.translation import gettext_lazy as _

USAGE_WINDOWS = [(1, _("Last 24 hours")), (7, _("Last 7 days")), (30, _("Last 30 days")), (90, _("Last 90 days"))]


class UsageFilterForm(forms.Form):
    days = forms.TypedChoiceField(
        label=_("Period"), coerce=int, choices=USAGE_WINDOWS, required=False, empty_value=None, initial=7
    )
    model = forms.ChoiceField(label=_("Model"), required=False)

    def __init__(self, *args, model_ids: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        model = self.fields["model"]
        assert isinstance(model, forms.ChoiceField)
        model.choices = [("", _("All models"))] + [(m, m) for m in model_ids]
