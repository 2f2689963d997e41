"""ExpectColumnValueCountsToBeAtLeast: each listed value occurs in at least `min_count` rows."""

from typing import Any, ClassVar

from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.render import LegacyDiagnosticRendererType, LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer
from great_expectations.render.renderer_configuration import RendererConfiguration, RendererValueType
from great_expectations.validator.metric_configuration import MetricConfiguration

# What Data Docs say the expectation checks; `$v__N` are the values, as Great Expectations' own set renderers name them.
SENTENCE = "must have at least $min_count rows for each of these values: {values}"


def _values_template(values: list[Any]) -> str:
    return ", ".join(f"$v__{index}" for index in range(len(values))) or "[ ]"


class ExpectColumnValueCountsToBeAtLeast(ColumnAggregateExpectation):
    """Every value in `value_set` occurs in at least `min_count` rows of the column (e.g. rows per class)."""

    value_set: list[Any]
    min_count: int

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.value_counts",)
    success_keys: ClassVar[tuple[str, ...]] = ("value_set", "min_count")
    args_keys: ClassVar[tuple[str, ...]] = ("column", "value_set", "min_count")

    def get_validation_dependencies(self, execution_engine: Any = None, runtime_configuration: Any = None) -> Any:
        """Ask for the column's value counts (the metric needs explicit sort/collate arguments)."""
        dependencies = super().get_validation_dependencies(execution_engine, runtime_configuration)
        current = dependencies.get_metric_configuration("column.value_counts")
        dependencies.set_metric_configuration(
            "column.value_counts",
            MetricConfiguration(
                "column.value_counts",
                metric_domain_kwargs=current.metric_domain_kwargs,
                metric_value_kwargs={"sort": "value", "collate": None},
            ),
        )
        return dependencies

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """The sentence for GX's atomic renderers: `label must have at least 20 rows of each of these values: ...`."""
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="value_set", param_type=RendererValueType.ARRAY)
        renderer_configuration.add_param(name="min_count", param_type=RendererValueType.NUMBER)
        if renderer_configuration.params.value_set:
            renderer_configuration = cls._add_array_params(
                array_param_name="value_set", param_prefix="v__", renderer_configuration=renderer_configuration
            )
        values = cls._get_array_string(
            array_param_name="value_set", param_prefix="v__", renderer_configuration=renderer_configuration
        )
        template = SENTENCE.format(values=values)
        if renderer_configuration.include_column_name:
            template = f"$column {template}"
        renderer_configuration.template_str = template
        return renderer_configuration

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration: Any = None, result: Any = None, runtime_configuration: Any = None, **kwargs: Any
    ) -> list[RenderedStringTemplateContent]:
        """The sentence Data Docs show in the Expectation column (instead of the raw arguments)."""
        runtime_configuration = runtime_configuration or {}
        if configuration is None and result is not None:
            configuration = result.expectation_config
        kwargs_ = dict(configuration.kwargs) if configuration is not None else {}
        values = list(kwargs_.get("value_set") or [])
        params: dict[str, Any] = {"column": kwargs_.get("column"), "min_count": kwargs_.get("min_count")}
        params |= {f"v__{index}": value for index, value in enumerate(values)}
        template = SENTENCE.format(values=_values_template(values))
        if runtime_configuration.get("include_column_name") is not False:
            template = f"$column {template}"
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": template,
                    "params": params,
                    "styling": runtime_configuration.get("styling") or {},
                },
            )
        ]

    @classmethod
    @renderer(renderer_type=LegacyDiagnosticRendererType.OBSERVED_VALUE)
    def _diagnostic_observed_value_renderer(
        cls, configuration: Any = None, result: Any = None, runtime_configuration: Any = None, **kwargs: Any
    ) -> str:
        """The Observed Value column: rows per listed value, and which fall short (instead of a raw dict)."""
        raw = (result.result or {}) if result is not None else {}
        observed = raw.get("observed_value") or {}
        short = (raw.get("details") or {}).get("below_minimum") or {}
        config = configuration or (result.expectation_config if result is not None else None)
        values = list((config.kwargs.get("value_set") if config is not None else None) or observed)
        counts = ", ".join(f"{value}: {observed.get(str(value), 0)}" for value in values)
        return f"{counts} (below the minimum: {', '.join(map(str, short))})" if short else counts

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: Any = None, execution_engine: Any = None
    ) -> dict:
        counts = metrics["column.value_counts"]
        observed = {str(value): int(count) for value, count in counts.items()}
        short = {str(v): observed.get(str(v), 0) for v in self.value_set if observed.get(str(v), 0) < self.min_count}
        return {"success": not short, "result": {"observed_value": observed, "details": {"below_minimum": short}}}
