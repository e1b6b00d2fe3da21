"""Console forms of the deployments app (validation of shape only; the rules live in deployments.services)."""

from typing import cast

from django import forms
from django.utils.functional import lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from core.forms import SecretTextarea
from deployments.models import (
    DEFAULT_PRIORITY_VALUE,
    MAX_PRIORITY_VALUE,
    AccessMode,
    BillingMode,
    ManualScale,
    ModelCache,
    PreemptionPolicy,
    Region,
    ScalingMode,
    ScalingTarget,
    dns1123_label,
)
from deployments.policy import ScalingPolicy
from deployments.services import MAX_INSTANCES

KUBECONFIG_MAX_BYTES = 256 * 1024


def _range_message() -> str:
    return gettext("Enter a whole number of instances from 1 to %(max)d.") % {"max": MAX_INSTANCES}


def instances_field(**kwargs) -> forms.IntegerField:
    """An instance count; every refusal (empty, not a number, out of range) names the allowed range."""
    message = lazy(_range_message, str)()
    errors = {key: message for key in ("required", "invalid", "min_value", "max_value")}
    return forms.IntegerField(
        label=_("Instances"), min_value=1, max_value=MAX_INSTANCES, error_messages=errors, **kwargs
    )


def _whole(label, help_text="") -> forms.IntegerField:
    # Only the shape is checked here; the ranges are the policy's (deployments.policy), shown on the field.
    return forms.IntegerField(
        label=label, help_text=help_text, widget=forms.NumberInput(attrs={"inputmode": "numeric"})
    )


class ScalingPolicyForm(forms.Form):
    """A service's scaling policy; the fields after the mode matter when it autoscales (the page hides them else)."""

    AUTOSCALE_FIELDS = [
        "min_instances",
        "max_instances",
        "scaling_target",
        "target_value",
        "scale_down_window_s",
        "idle_to_zero_s",
        "max_wake_wait_s",
    ]

    scaling_mode = forms.ChoiceField(
        label=_("Scaling"), choices=ScalingMode.choices, initial=ScalingMode.FIXED, widget=forms.RadioSelect
    )
    min_instances = _whole(_("Minimum instances"), _("0 lets an idle pay-as-you-go service stop until a request."))
    max_instances = _whole(_("Maximum instances"))
    scaling_target = forms.ChoiceField(label=_("Scale on"), choices=ScalingTarget.choices)
    target_value = _whole(
        _("Target"), _("Requests per instance (1–1000), TTFT p95 in ms (50–60000) or KV-cache % (10–95).")
    )
    scale_down_window_s = _whole(
        _("Scale-down window (s)"), _("Demand must stay lower this long before instances are removed (0–3600).")
    )
    idle_to_zero_s = _whole(_("Idle before scaling to zero (s)"), _("With minimum 0 (60–86400)."))
    max_wake_wait_s = _whole(
        _("Longest wait while waking (s)"), _("A request to a service at zero waits this long at most (5–600).")
    )

    @classmethod
    def initial_for(cls, policy: ScalingPolicy) -> dict:
        return policy.as_dict()

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(**{name: self.cleaned_data[name] for name in ScalingPolicy.names()})


class ServiceCreateForm(ScalingPolicyForm):
    name = forms.CharField(
        label=_("Service name"),
        max_length=40,
        validators=[dns1123_label],
        help_text=_("Callable as <namespace>/<service name>."),
    )
    region = forms.ChoiceField(label=_("Region"))
    instances = instances_field(initial=1)
    billing_mode = forms.ChoiceField(
        label=_("Billing mode"), choices=BillingMode.choices, initial=BillingMode.PAYG, widget=forms.RadioSelect
    )

    field_order = ["name", "region", "billing_mode", "scaling_mode", "instances", *ScalingPolicyForm.AUTOSCALE_FIELDS]
    # What the policy fields start as, and stand for when a post leaves them out (a fixed deploy needs none).
    DEFAULT_POLICY = ScalingPolicy(max_instances=2)

    def __init__(self, *args, regions: list[Region], **kwargs):
        kwargs["initial"] = {**self.DEFAULT_POLICY.as_dict(), **kwargs.get("initial", {})}
        super().__init__(*args, **kwargs)
        for name in ScalingPolicy.names():
            self.fields[name].required = False
        self.fields["instances"].help_text = _("With autoscaling: the instances it starts with, within the bounds.")
        self.regions = {r.code: r for r in regions}
        cast(forms.ChoiceField, self.fields["region"]).choices = [
            (r.code, f"{r.display_name} · {r.code}") for r in regions
        ]

    def clean_region(self):
        return self.regions[self.cleaned_data["region"]]

    def clean(self):
        data = super().clean() or {}
        for name, default in self.DEFAULT_POLICY.as_dict().items():
            if name not in self.errors and data.get(name) in (None, ""):
                data[name] = default
        return data


class ScaleForm(forms.Form):
    instances = instances_field()
    # Set by the confirmation page's button: without it a POST only shows the price and asks.
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)
    # An autoscaling service: which of the confirmation page's two buttons was pressed (policy.manual_scale_outcome).
    on_autoscale = forms.ChoiceField(choices=ManualScale.choices, required=False, widget=forms.HiddenInput)


class GpuQuotaForm(forms.Form):
    max_gpus = forms.IntegerField(
        label=_("Maximum GPUs"),
        min_value=0,
        required=False,
        help_text=_("Empty: the platform default."),
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "size": 6}),
    )


class _KubeconfigFields(forms.Form):
    kubeconfig = forms.CharField(
        label=_("Kubeconfig"),
        required=False,
        strip=False,
        # A form refused (bad YAML, a failed probe) comes back empty: the kubeconfig is pasted again, never echoed.
        widget=SecretTextarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
        help_text=_("Paste it here or upload the file. It is stored encrypted and never shown again."),
    )
    kubeconfig_file = forms.FileField(label=_("…or upload a kubeconfig file"), required=False)
    context = forms.CharField(
        label=_("Context"), max_length=200, required=False, help_text=_("Empty: the kubeconfig's current-context.")
    )

    def clean(self):
        super().clean()
        data = self.cleaned_data
        upload = data.get("kubeconfig_file")
        if upload is not None:
            if upload.size > KUBECONFIG_MAX_BYTES:
                raise forms.ValidationError(_("The kubeconfig file is larger than 256 KiB."))
            try:
                data["kubeconfig"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError(_("The uploaded kubeconfig is not UTF-8 text.")) from None
        if not (data.get("kubeconfig") or "").strip():
            self.add_error("kubeconfig", _("Paste or upload a kubeconfig."))
        return data


class _PriorityFields(forms.Form):
    priority_value = forms.IntegerField(
        label=_("Priority of the platform's pods"),
        min_value=0,
        max_value=MAX_PRIORITY_VALUE,
        initial=DEFAULT_PRIORITY_VALUE,
        required=False,
        help_text=_("The value of the PriorityClass maas-online-inference; below the system classes."),
    )
    priority_preemption = forms.ChoiceField(
        label=_("Preemption"),
        choices=PreemptionPolicy.choices,
        initial=PreemptionPolicy.NEVER,
        required=False,
        help_text=_("Never: the platform's pods wait for free GPUs and evict no other tenant's pods."),
    )

    def clean_priority_value(self):
        value = self.cleaned_data.get("priority_value")
        return DEFAULT_PRIORITY_VALUE if value is None else value

    def clean_priority_preemption(self):
        return self.cleaned_data.get("priority_preemption") or PreemptionPolicy.NEVER


class ClusterPriorityForm(_PriorityFields):
    pass


class ClusterNamespaceForm(forms.Form):
    org_gpu_quota = forms.IntegerField(
        label=_("GPU quota per organization"),
        min_value=0,
        help_text=_("A ResourceQuota in each organization namespace: GPUs its pods may request together."),
    )
    network_sources = forms.CharField(
        label=_("Sources allowed to reach model pods"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text=_("CIDRs of the API server (proxy mode) or the gateway (pod IPs); empty: the nodes' addresses."),
    )
    ingress_namespace = forms.CharField(label=_("Ingress controller namespace"), required=False, max_length=63)
    model_cache = forms.ChoiceField(label=_("Model cache"), choices=ModelCache.choices)
    model_cache_path = forms.CharField(label=_("PVC name or host directory"), required=False, max_length=255)
    image_mirror = forms.CharField(label=_("Image registry mirror"), required=False, max_length=255)
    hf_token = forms.CharField(
        label=_("Hugging Face token"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_("Stored encrypted and never shown again; empty keeps the stored one."),
    )
    modelscope_token = forms.CharField(
        label=_("ModelScope token"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    clear_tokens = forms.BooleanField(label=_("Remove the stored tokens"), required=False)


class ClusterForm(_KubeconfigFields, _PriorityFields):
    name = forms.SlugField(label=_("Cluster name"), max_length=60)
    region = forms.ModelChoiceField(label=_("Region"), queryset=Region.objects.all())
    access_mode = forms.ChoiceField(
        label=_("How the gateway reaches replicas"), choices=AccessMode.choices, initial=AccessMode.PROXY
    )
    ingress_base_url = forms.URLField(label=_("Ingress base URL"), required=False, assume_scheme="https")

    field_order = [
        "name",
        "region",
        "kubeconfig",
        "kubeconfig_file",
        "context",
        "access_mode",
        "ingress_base_url",
        "priority_value",
        "priority_preemption",
    ]


class KubeconfigReplaceForm(_KubeconfigFields):
    pass
