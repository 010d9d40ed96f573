from __future__ import annotations

from typing import TYPE_CHECKING, Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import ProblemError
from apps.common.filters import FilterSet, VisibleIdFilter
from apps.common.idempotency import idempotent
from apps.employers import selectors, services
from apps.employers.api.serializers import (
    CoverageSerializer,
    EmployeeSerializer,
    EmployerCreateInputSerializer,
    EmployerSerializer,
    EmployerUpdateInputSerializer,
    PolicyCreateInputSerializer,
    PolicySerializer,
)
from apps.employers.models import Coverage, CoverageStatus, Employee, Employer, EmployerStatus, Policy
from apps.insurers.api.serializers import InsurerSerializer
from apps.insurers.selectors import insurers_active
from apps.partners.api.base import PartnerGenericAPIView, actor_from_request, principal_of
from apps.partners.contracts import Scope

if TYPE_CHECKING:
    from apps.insurers.models import Insurer


class EmployerFilter(FilterSet):
    status = django_filters.ChoiceFilter(choices=EmployerStatus.choices)
    external_ref = django_filters.CharFilter()

    class Meta:
        model = Employer
        fields = ("status", "external_ref")


class EmployerListCreateView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    write_scope = Scope.EMPLOYERS_WRITE
    serializer_class = EmployerSerializer
    filterset_class = EmployerFilter

    def get_queryset(self) -> QuerySet[Employer]:
        return selectors.employers_visible_to(principal_of(self.request))

    @extend_schema(operation_id="employers_list", responses=EmployerSerializer(many=True))
    def get(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(EmployerSerializer(page, many=True).data)

    @extend_schema(request=EmployerCreateInputSerializer, responses={201: EmployerSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        if not principal.all_employers:
            raise ProblemError(
                status_code=403,
                detail="Only a key that acts for all of its partner's employers may create employers.",
                slug="employer-create-forbidden",
            )
        data = EmployerCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        employer = services.employer_create(
            partner_id=principal.partner_id, actor=actor_from_request(request), **data.validated_data
        )
        return Response(EmployerSerializer(employer).data, status=status.HTTP_201_CREATED)


class EmployerDetailView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    write_scope = Scope.EMPLOYERS_WRITE
    serializer_class = EmployerSerializer

    def get(self, request: Request, pk: int) -> Response:
        employer = selectors.employer_get_for(principal_of(request), pk)
        return Response(EmployerSerializer(employer).data)

    @extend_schema(request=EmployerUpdateInputSerializer, responses=EmployerSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        employer = selectors.employer_get_for(principal_of(request), pk)
        data = EmployerUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        employer = services.employer_update(
            employer=employer, changes=dict(data.validated_data), actor=actor_from_request(request)
        )
        return Response(EmployerSerializer(employer).data)


class InsurerListView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    serializer_class = InsurerSerializer

    def get_queryset(self) -> QuerySet[Insurer]:
        return insurers_active()

    @extend_schema(operation_id="insurers_list", responses=InsurerSerializer(many=True))
    def get(self, request: Request, *args: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(InsurerSerializer(page, many=True).data)


class PolicyFilter(FilterSet):
    employer = VisibleIdFilter(field_name="employer_id", visible_to=selectors.employers_visible_to, noun="employer")

    class Meta:
        model = Policy
        fields = ("employer",)


class PolicyListCreateView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    write_scope = Scope.EMPLOYERS_WRITE
    serializer_class = PolicySerializer
    filterset_class = PolicyFilter

    def get_queryset(self) -> QuerySet[Policy]:
        return selectors.policies_visible_to(principal_of(self.request))

    @extend_schema(operation_id="policies_list", responses=PolicySerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(PolicySerializer(page, many=True).data)

    @extend_schema(request=PolicyCreateInputSerializer, responses={201: PolicySerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = PolicyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        employer = selectors.employer_get_for(principal_of(request), values.pop("employer"))
        policy = services.policy_create(
            employer=employer, insurer_code=values.pop("insurer"), actor=actor_from_request(request), **values
        )
        return Response(PolicySerializer(policy).data, status=status.HTTP_201_CREATED)


class PolicyDetailView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    serializer_class = PolicySerializer

    def get(self, request: Request, pk: int) -> Response:
        return Response(PolicySerializer(selectors.policy_get_for(principal_of(request), pk)).data)


class EmployeeFilter(FilterSet):
    employer = VisibleIdFilter(field_name="employer_id", visible_to=selectors.employers_visible_to, noun="employer")
    employee_code = django_filters.CharFilter()

    class Meta:
        model = Employee
        fields = ("employer", "employee_code")


class EmployeeListView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    serializer_class = EmployeeSerializer
    filterset_class = EmployeeFilter

    def get_queryset(self) -> QuerySet[Employee]:
        return selectors.employees_visible_to(principal_of(self.request))

    @extend_schema(operation_id="employees_list", responses=EmployeeSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(EmployeeSerializer(page, many=True).data)


class CoverageFilter(FilterSet):
    employer = VisibleIdFilter(
        field_name="policy__employer_id", visible_to=selectors.employers_visible_to, noun="employer"
    )
    policy = VisibleIdFilter(field_name="policy_id", visible_to=selectors.policies_visible_to, noun="policy")
    employee_code = django_filters.CharFilter(field_name="employee__employee_code")
    status = django_filters.ChoiceFilter(choices=CoverageStatus.choices)

    class Meta:
        model = Coverage
        fields = ("employer", "policy", "employee_code", "status")


class CoverageListView(PartnerGenericAPIView):
    read_scope = Scope.EMPLOYERS_READ
    serializer_class = CoverageSerializer
    filterset_class = CoverageFilter

    def get_queryset(self) -> QuerySet[Coverage]:
        return selectors.coverages_visible_to(principal_of(self.request))

    @extend_schema(operation_id="coverages_list", responses=CoverageSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(CoverageSerializer(page, many=True).data)
